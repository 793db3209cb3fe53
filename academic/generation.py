"""Polishing one chunk: a fair place in the model queue, one request, the
checks, at most one retry, and the chunk's end state.

Chunks go through the same admission as chat replies, at batch priority and
with the job's owner as the fairness key, so a paper of sixty chunks takes
turns with a colleague's chat instead of blocking it. The request takes the
road every request nobody watches token by token takes
(assistant.completion): admission, the back-off from a busy server, the
time limits and the stop key. A chunk that cannot be used is never pasted
into the document: it keeps its original text and says why.
"""

import logging
import re

from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from academic import checks, prompts
from academic.models import PolishChunk
from academic.placeholders import PLACEHOLDER_PATTERN, MaskedText
from assistant import failures
from assistant.admission import BATCH, Cancelled
from assistant.completion import CompletionFailure, complete
from assistant.models import ModelProfile
from chat.prompt import estimate_tokens, output_budget

logger = logging.getLogger(__name__)

ATTEMPTS = 2
# How long the queue position shown for a job stays without a refresh; a
# waiting chunk refreshes it every admission.ON_WAIT_INTERVAL.
QUEUE_NOTICE_SECONDS = 2
PROSE = re.compile(r"[^\W\d_]", re.UNICODE)

# Why a chunk was kept as written, beyond the checks and the model service's
# own failures (assistant.failures). The codes are assistant.completion's.
# Failures that asking again cannot mend.
FINAL_CODES = {"quota_daily", "quota_monthly", "queue_timeout"}
QUOTA_USED_UP = _(
    "Your token quota was used up before this part was done; it was left "
    "unchanged. Your usage page says when the quota resets."
)
KEEP_REASONS = {
    "cancelled": _("The job was cancelled before this part was done."),
    "quota_daily": QUOTA_USED_UP,
    "quota_monthly": QUOTA_USED_UP,
    "length_in_answer": _(
        "The model's answer was cut off at its output limit, so it could not be used."
    ),
    "length_in_reasoning": _(
        "The model reached its output limit while still thinking, so it gave no "
        "answer for this part."
    ),
    "no_answer": _("The model gave no answer for this part."),
    "incomplete": _("The connection to the model closed before the answer ended."),
    "reason_unknown": _(
        "The model service ended the answer without saying why; it may be incomplete."
    ),
}


# Why a file of a project was left as it was (academic.project).
NOT_PROCESSED_REASONS = {
    "missing": _("Referred to, but not in the archive."),
    "not_tex": _(
        "Input by the project, but not a TeX source (it has another "
        "extension); left unchanged."
    ),
    "unreached": _(
        "Not input by the main file, or only through a macro; left unchanged."
    ),
    "encoding": _("Its character encoding could not be recognised."),
    "limit": _("Beyond the number of files one job edits."),
}


def not_processed_reason(code):
    return NOT_PROCESSED_REASONS.get(code, code)


def keep_reason(code):
    """The translated explanation of why a chunk kept its original text."""
    if code in checks.MESSAGES:
        return checks.MESSAGES[code]
    if code in KEEP_REASONS:
        return KEEP_REASONS[code]
    return failures.describe(code)


def has_prose(masked_chunk):
    """Whether a masked chunk holds any words a model could edit."""
    return PROSE.search(PLACEHOLDER_PATTERN.sub("", masked_chunk)) is not None


class ChunkWriter:
    def __init__(self, chunk):
        self.chunk = chunk
        self.job = chunk.job
        self.profile = None

    def run(self):
        try:
            self._run()
        except Cancelled:
            self.chunk.keep_original("cancelled")
        except Exception as exc:  # noqa: BLE001 - every failure ends the chunk
            code, detail = failures.classify(exc)
            if code == "internal":
                logger.exception("chunk %s failed", self.chunk.pk)
            else:
                logger.warning("chunk %s failed: %s %s", self.chunk.pk, code, detail)
            self.chunk.keep_original(code, detail)

    def _run(self):
        if self._stopped():
            raise Cancelled(self.chunk.pk)
        if not has_prose(self.chunk.masked_text):
            # Only protected parts and spacing: nothing to ask a model about.
            self.chunk.finish(self.chunk.original_text)
            return

        self.profile = ModelProfile.ensure(self.job.model)
        self._mark_running()
        rejection = None
        for _attempt in range(ATTEMPTS):
            failure = self._try(rejection)
            if failure is None:
                return
            if failure.code in FINAL_CODES:
                break
            # Only a check's reason helps the model; a cut-off answer or a
            # server error is simply asked again.
            rejection = failure.detail if failure.code in checks.MESSAGES else None
        self.chunk.keep_original(failure.code, failure.detail)

    def _try(self, rejection):
        """One request and its checks: None when the chunk is finished, else
        the CompletionFailure that stopped it."""
        self.chunk.attempts += 1
        try:
            completion = self._ask(rejection)
        except CompletionFailure as exc:
            return exc

        self._count_usage(completion)
        masked = self._masked()
        returned = prompts.read_answer(completion.answer, self.chunk.masked_text)
        problems = checks.check_chunk(masked, self.chunk.masked_text, returned)
        if problems:
            details = _details(problems)
            logger.info(
                "chunk %s rejected (attempt %s): %s",
                self.chunk.pk,
                self.chunk.attempts,
                details,
            )
            return CompletionFailure(problems[0].code, details)

        self.chunk.finish(masked.restore(returned))
        return None

    def _ask(self, rejection):
        request = prompts.ChunkRequest(
            task=self.job.task,
            preset=self.job.preset,
            glossary=self.job.glossary,
            masked_chunk=self.chunk.masked_text,
        )
        messages = prompts.build_messages(request, rejection)
        prompt_estimate = estimate_tokens(messages)
        return complete(
            self.profile,
            messages,
            output_budget(self.profile, prompt_estimate),
            user_id=self.job.owner_id,
            kind="polish",
            priority=BATCH,
            stop_key=self.job.stop_key,
            prompt_estimate=prompt_estimate,
            on_wait=self._tell_position,
            thinking=self.job.thinking,
        )

    def _tell_position(self, position, eta):
        # The job's page shows the best place any of its chunks holds.
        best = cache.get(self.job.queue_key)
        if best is None or position <= best:
            cache.set(self.job.queue_key, position, QUEUE_NOTICE_SECONDS)

    def _count_usage(self, completion):
        # Every attempt used the backend, so every attempt is counted.
        chunk = self.chunk
        if completion.prompt_tokens is not None:
            chunk.prompt_tokens = (chunk.prompt_tokens or 0) + completion.prompt_tokens
        if completion.completion_tokens is not None:
            chunk.completion_tokens = (
                chunk.completion_tokens or 0
            ) + completion.completion_tokens

    def _masked(self):
        protected = self.chunk.file.protected
        originals = {int(number): text for number, text in protected.items()}
        return MaskedText(text="", originals=originals)

    def _stopped(self):
        return bool(cache.get(self.job.stop_key))

    def _mark_running(self):
        self.chunk.status = PolishChunk.Status.RUNNING
        self.chunk.started_at = timezone.now()
        self.chunk.save(update_fields=["status", "started_at"])


def _details(problems):
    # In English whatever the worker's language: it is read by the model.
    return "; ".join(
        f"{problem.code.replace('_', ' ')} ({problem.details})" for problem in problems
    )
