"""Polishing one chunk: a fair place in the model queue, one streamed
request, the checks, at most one retry, and the chunk's end state.

Chunks go through the same admission as chat replies, at batch priority and
with the job's owner as the fairness key, so a paper of sixty chunks takes
turns with a colleague's chat instead of blocking it. The stream is read and
cut the way chat reads it (chat.generation.StreamGuard, assistant.streaming).
A chunk that cannot be used is never pasted into the document: it keeps its
original text and says why.
"""

import logging
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from academic import checks, prompts
from academic.models import PolishChunk
from academic.placeholders import PLACEHOLDER_PATTERN, MaskedText
from assistant import backoff, failures
from assistant.admission import BATCH, Cancelled, TimedOut, wait_for_slot
from assistant.modelapi import open_chat_stream
from assistant.models import ModelProfile
from assistant.streaming import (
    ReplyParser,
    ReplyStatus,
    SSEComment,
    feed_sse_item,
    iter_sse,
)
from chat.generation import StreamGuard
from chat.prompt import estimate_tokens, output_budget

logger = logging.getLogger(__name__)

ATTEMPTS = 2
# How long the queue position shown for a job stays without a refresh; a
# waiting chunk refreshes it every admission.ON_WAIT_INTERVAL.
QUEUE_NOTICE_SECONDS = 2
PROSE = re.compile(r"[^\W\d_]", re.UNICODE)

# Why a chunk was kept as written, beyond the checks and the model service's
# own failures (assistant.failures).
KEEP_REASONS = {
    "cancelled": _("The job was cancelled before this part was done."),
    "length": _(
        "The model's answer was cut off at its output limit, so it could not be used."
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


class ChunkFailure(Exception):
    """The model's answer for a chunk ended in a way that cannot be used."""

    def __init__(self, code, detail=""):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None


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
        rejection = None
        for _attempt in range(ATTEMPTS):
            failure = self._try(rejection)
            if failure is None:
                return
            # Only a check's reason helps the model; a cut-off answer or a
            # server error is simply asked again.
            rejection = failure.detail if failure.code in checks.MESSAGES else None
        self.chunk.keep_original(failure.code, failure.detail)

    def _try(self, rejection):
        """One request and its checks: None when the chunk is finished, else
        the ChunkFailure that stopped it."""
        self.chunk.attempts += 1
        try:
            answer = self._ask(rejection)
        except ChunkFailure as exc:
            return exc

        self._count_usage(answer)
        masked = self._masked()
        returned = prompts.read_answer(answer.text, self.chunk.masked_text)
        problems = checks.check_chunk(masked, self.chunk.masked_text, returned)
        if problems:
            details = _details(problems)
            logger.info(
                "chunk %s rejected (attempt %s): %s",
                self.chunk.pk,
                self.chunk.attempts,
                details,
            )
            return ChunkFailure(problems[0].code, details)

        self.chunk.finish(masked.restore(returned))
        return None

    def _count_usage(self, answer):
        # Every attempt used the backend, so every attempt is counted.
        chunk = self.chunk
        if answer.prompt_tokens is not None:
            chunk.prompt_tokens = (chunk.prompt_tokens or 0) + answer.prompt_tokens
        if answer.completion_tokens is not None:
            chunk.completion_tokens = (
                chunk.completion_tokens or 0
            ) + answer.completion_tokens

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

    def _ask(self, rejection):
        request = prompts.ChunkRequest(
            task=self.job.task,
            preset=self.job.preset,
            glossary=self.job.glossary,
            masked_chunk=self.chunk.masked_text,
        )
        messages = prompts.build_messages(request, rejection)
        prompt_estimate = estimate_tokens(messages)
        max_tokens = output_budget(self.profile, prompt_estimate)
        with self._wait_for_slot(prompt_estimate):
            if self.chunk.status != PolishChunk.Status.RUNNING:
                self._mark_running()
            return self._stream(messages, max_tokens)

    def _wait_for_slot(self, prompt_estimate):
        """A lease on the backend, after a fair wait behind other work.

        The job's page shows the best place any of its chunks holds.
        """

        def tell_position(position, eta):
            best = cache.get(self.job.queue_key)
            if best is None or position <= best:
                cache.set(self.job.queue_key, position, QUEUE_NOTICE_SECONDS)

        try:
            lease = wait_for_slot(
                pool=f"{settings.MODEL_API_BASE_URL}|{self.job.model}",
                user_key=str(self.job.owner_id),
                priority=BATCH,
                capacity=self.profile.concurrency_limit,
                cost=self.profile.admission_cost(prompt_estimate),
                on_wait=tell_position,
                cancelled=self._stopped,
                timeout=settings.QUEUE_TIMEOUT,
            )
        except TimedOut:
            raise ChunkFailure("queue_timeout") from None
        return lease

    def _stream(self, messages, max_tokens):
        """The model's answer, asking again while the server says it is busy."""

        def request():
            with open_chat_stream(self.job.model, messages, max_tokens) as stream:
                with StreamGuard(self.job.stop_key, stream) as guard:
                    return self._read(stream, guard)

        return backoff.call_while_busy(request, self._wait_out_busy)

    def _wait_out_busy(self, exc, seconds, refusals):
        logger.warning(
            "chunk %s: model server busy (%s, %s of %s), asking again in %.1f s",
            self.chunk.pk,
            exc.status_code,
            refusals,
            settings.MODEL_API_BUSY_RETRIES,
            seconds,
        )
        wake_at = time.monotonic() + seconds
        while (remaining := wake_at - time.monotonic()) > 0:
            if self._stopped():
                raise Cancelled(self.chunk.pk)
            time.sleep(min(remaining, settings.STREAM_STOP_POLL_INTERVAL))

    def _read(self, stream, guard):
        parser = ReplyParser(starts_in_reasoning=self.profile.starts_in_reasoning)
        try:
            for item in iter_sse(stream.lines()):
                if stream.cut_requested.is_set():
                    break
                if isinstance(item, SSEComment):
                    continue
                guard.saw_data()
                feed_sse_item(item, parser)
                if parser.ended:
                    break
        except (*failures.TRANSPORT_ERRORS, OSError) as exc:
            if not stream.cut_requested.is_set():
                if guard.last_data_at is None:
                    raise
                raise ChunkFailure("incomplete", repr(exc)) from exc

        if guard.reason == "stopped":
            raise Cancelled(self.chunk.pk)
        if guard.reason:
            raise ChunkFailure(guard.reason)
        parser.close()
        return self._answer(parser)

    def _answer(self, parser):
        if parser.error is not None:
            raise ChunkFailure("in_band", parser.error.message)
        if parser.status in (
            ReplyStatus.LENGTH_IN_ANSWER,
            ReplyStatus.LENGTH_IN_REASONING,
        ):
            raise ChunkFailure("length")
        if parser.status != ReplyStatus.STOP:
            raise ChunkFailure(str(parser.status or ReplyStatus.REASON_UNKNOWN))
        if not parser.answer.strip():
            raise ChunkFailure("no_answer")

        usage = parser.usage
        return Answer(
            text=parser.answer,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )


def _details(problems):
    # In English whatever the worker's language: it is read by the model.
    return "; ".join(
        f"{problem.code.replace('_', ' ')} ({problem.details})" for problem in problems
    )
