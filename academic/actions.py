"""Starting, cancelling and reviewing polish jobs: the writes that touch
several rows or reach beyond the database (the task queue, the stop key)."""

import logging
import math
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from academic import compiling, project, prompts
from academic.chunking import split_into_chunks
from academic.encoding import DecodedText, EncodingProblem, encode_text
from academic.masking import mask_document
from academic.models import (
    NEWLINE_CHOICE,
    ChangeDecision,
    PolishChunk,
    PolishFile,
    PolishJob,
)
from assistant.models import ModelProfile
from chat.prompt import SAFETY_MARGIN, estimate_tokens

logger = logging.getLogger(__name__)

# Chunks are kept well below what the model could take: a failed chunk costs
# less to retry, many chunks run side by side, and the review shows results
# sooner. Measured in estimated tokens of the masked text.
CHUNK_TOKEN_CEILING = 1200
CHUNK_TOKEN_FLOOR = 64
# Room in the prompt for a glossary and the reason a first answer failed.
PROMPT_ALLOWANCE = 400
# Output tokens per input token: a translation into Chinese runs longer in
# tokens than its English source, an edit about as long as its input.
OUTPUT_RATIO = {PolishJob.Task.TRANSLATE_EN_ZH: 1.6}
DEFAULT_OUTPUT_RATIO = 1.25
STOP_KEY_SECONDS = 7 * 24 * 3600


def chunk_budget(profile, task, thinking=True):
    """The most estimated tokens one chunk of a `task` job may hold.

    The answer must fit the model's output cap and, with the prompt, its
    context; a reasoning model also needs room to think before it answers,
    unless its thinking is switched off.
    """
    ratio = OUTPUT_RATIO.get(task, DEFAULT_OUTPUT_RATIO)
    overhead = _prompt_overhead(task) + PROMPT_ALLOWANCE
    thinks = profile.is_reasoning and (thinking or not profile.can_switch_thinking)
    room_to_think = settings.REASONING_MIN_OUTPUT_TOKENS if thinks else 0

    limits = [
        CHUNK_TOKEN_CEILING,
        profile.input_limit - overhead,
        (profile.max_output_tokens - room_to_think) / ratio,
        (profile.context_window - overhead - room_to_think - SAFETY_MARGIN)
        / (1 + ratio),
    ]
    return max(CHUNK_TOKEN_FLOOR, math.floor(min(limits)))


def _prompt_overhead(task):
    empty = prompts.ChunkRequest(
        task=task, preset=PolishJob.Preset.JOURNAL, glossary="", masked_chunk=""
    )
    return estimate_tokens(prompts.build_messages(empty))


@dataclass(frozen=True)
class Document:
    """One file to edit: its path or name, DecodedText and kind."""

    path: str
    decoded: DecodedText
    kind: str


def start_job(owner, documents, fields, archive=None, not_processed=()):
    """Create a job for `documents`, cut each into chunks and queue a task
    for every chunk.

    `fields` holds task, preset, glossary, model, file_name and optionally
    thinking; `archive` is a project's zip, kept for the download.
    """
    from academic.tasks import polish_chunk

    profile = ModelProfile.ensure(fields["model"])
    budget = chunk_budget(profile, fields["task"], fields.get("thinking", True))
    budget = max(CHUNK_TOKEN_FLOOR, budget - _glossary_tokens(fields["glossary"]))
    masked = [mask_document(doc.decoded.text, doc.kind) for doc in documents]

    with transaction.atomic():
        has_latex = any(doc.kind == PolishJob.SourceKind.LATEX for doc in documents)
        job = PolishJob.objects.create(
            owner=owner,
            archive=archive,
            is_project=archive is not None,
            not_processed=list(not_processed),
            compile_status=PolishJob.CompileStatus.PENDING if has_latex else "",
            **fields,
        )
        chunks = []
        for position, (document, masked_text) in enumerate(zip(documents, masked)):
            polish_file = _create_file(job, position, document, masked_text)
            for piece in split_into_chunks(masked_text.text, budget):
                chunks.append(
                    PolishChunk(
                        job=job,
                        file=polish_file,
                        position=len(chunks),
                        original_text=masked_text.restore(piece),
                        masked_text=piece,
                    )
                )
        chunk_ids = [chunk.pk for chunk in PolishChunk.objects.bulk_create(chunks)]
        # Shortcoming: every chunk is a task at once, and a chunk waiting in
        # the admission queue holds a worker thread. A paper of more chunks
        # than the workers have threads keeps the rest in the broker's queue,
        # where a colleague's chat reply queued after them waits too (the
        # admission queue's priority only orders requests that have a
        # thread). docs/deploy.md says to size the workers' threads for it.
        transaction.on_commit(
            lambda: [polish_chunk.delay(chunk_id) for chunk_id in chunk_ids]
        )

    logger.info("job %s: %s chunks of at most %s tokens", job.pk, len(chunks), budget)
    if not chunks:
        job.finish_if_complete()
        check_compiles(job)
    return job


def _create_file(job, position, document, masked):
    decoded = document.decoded
    return PolishFile.objects.create(
        job=job,
        position=position,
        path=document.path,
        source_kind=document.kind,
        encoding=decoded.encoding,
        has_bom=decoded.bom,
        newline=NEWLINE_CHOICE[decoded.newline],
        source_text=decoded.text,
        protected={str(n): text for n, text in masked.originals.items()},
    )


def _glossary_tokens(glossary):
    # The glossary goes into every chunk's prompt; beyond the allowance it
    # takes room from the chunk.
    extra = estimate_tokens([{"content": glossary}]) - PROMPT_ALLOWANCE // 2
    return max(0, extra)


def cancel_job(job):
    """Stop the job: queued chunks end now, running ones at their next poll."""
    cache.set(job.stop_key, True, STOP_KEY_SECONDS)
    PolishJob.objects.filter(pk=job.pk, status=PolishJob.Status.RUNNING).update(
        status=PolishJob.Status.CANCELLED, finished_at=timezone.now()
    )
    # A cancelled job is not compiled: part of it was never done.
    PolishJob.objects.filter(
        pk=job.pk, compile_status=PolishJob.CompileStatus.PENDING
    ).update(compile_status=PolishJob.CompileStatus.NOT_LATEX)
    job.refresh_from_db(fields=["status", "finished_at", "compile_status"])
    job.chunks.filter(status=PolishChunk.Status.QUEUED).update(
        status=PolishChunk.Status.KEPT,
        failure_code="cancelled",
        finished_at=timezone.now(),
    )


def check_compiles(job):
    """Compile the original and the model's result of a finished LaTeX job.

    Runs once per job, in the worker that finished its last chunk.
    """
    claimed = PolishJob.objects.filter(
        pk=job.pk,
        status=PolishJob.Status.DONE,
        compile_status=PolishJob.CompileStatus.PENDING,
    ).update(compile_status=PolishJob.CompileStatus.RUNNING)
    if not claimed:
        return

    original, result, main = _compile_trees(job)
    outcome = compiling.check_result(original, result, main)
    job.compile_status = outcome.status
    job.compile_engine = outcome.engine
    job.compile_errors = "\n".join(outcome.new_errors)
    # An update, not a save: the author may have deleted the job meanwhile.
    PolishJob.objects.filter(pk=job.pk).update(
        compile_status=job.compile_status,
        compile_engine=job.compile_engine,
        compile_errors=job.compile_errors,
    )
    logger.info("job %s compile check: %s", job.pk, outcome.status)


def _compile_trees(job):
    """({path: bytes} of the original, of the result, the main file's path)."""
    original = {}
    result = {}
    for polish_file, text in job.merged_texts(accept_all=True).items():
        source = polish_file.decoded_source()
        path = polish_file.path if job.is_project else _single_name(polish_file)
        original[path] = encode_text(polish_file.source_text, source)
        try:
            result[path] = encode_text(text, source)
        except EncodingProblem:
            result[path] = encode_text(text, source, as_utf8=True)

    main = next(iter(original))
    if job.is_project:
        members = project.read_members(bytes(job.archive))
        original = {**members, **original}
        result = {**members, **result}
    return original, result, main


def _single_name(polish_file):
    name = PurePosixPath(polish_file.path or "document.tex").name
    return name if name.endswith(".tex") else "document.tex"


def decide(chunk, change_index, accepted):
    """Record the author's decision on one change of `chunk`."""
    ChangeDecision.objects.update_or_create(
        chunk=chunk, change_index=change_index, defaults={"accepted": accepted}
    )


def decide_all(job, accepted):
    """Accept or reject every change of every finished chunk of `job`."""
    rows = [
        ChangeDecision(chunk=chunk, change_index=change.index, accepted=accepted)
        for chunk in job.chunks.filter(status=PolishChunk.Status.DONE)
        for change in chunk.changes()
    ]
    with transaction.atomic():
        ChangeDecision.objects.filter(chunk__job=job).delete()
        ChangeDecision.objects.bulk_create(rows)
