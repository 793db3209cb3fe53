"""The map and reduce steps of reading a paper, as Celery tasks.

Each part is one task, queued at batch priority through the same admission,
quotas and metering as every model request (assistant.completion), so a long
paper takes turns with colleagues' chats. The worker that finishes the last
part claims the paper and writes the summary in the same task.

A part whose worker died while reading it stays "reading", and so does its
paper: nothing queues it again. Cancel ends such a paper; the reader then
uploads it again.
"""

import logging

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from academic import reading
from academic.models import Paper, PaperPart
from academic.refs import REF_IN_TEXT
from assistant import failures
from assistant.admission import BATCH, Cancelled
from assistant.completion import CompletionFailure, complete
from assistant.models import ModelProfile
from chat.prompt import estimate_tokens, output_budget

logger = logging.getLogger(__name__)


def start_reading(paper):
    """Queue a task for every part of `paper` once the rows are committed."""
    part_ids = list(paper.parts.values_list("pk", flat=True))
    transaction.on_commit(lambda: [read_paper_part.delay(pk) for pk in part_ids])
    logger.info("paper %s: %s parts queued", paper.pk, len(part_ids))


@shared_task(ignore_result=True)
def read_paper_part(part_id):
    """Write the notes on part `part_id`, then the summary if it was the last.

    A part deleted with its paper, or no longer queued (a duplicate
    delivery), is skipped. Holds one worker thread while it waits for a
    slot and while the model writes.
    """
    try:
        part = PaperPart.objects.select_related("paper", "section").get(pk=part_id)
    except PaperPart.DoesNotExist:
        logger.info("paper part %s was deleted before it was read", part_id)
        return

    if part.status != PaperPart.Status.QUEUED:
        logger.info("paper part %s is %s; skipped", part_id, part.status)
    else:
        _read_part(part)
    summarise_if_read(part.paper)


def _read_part(part):
    paper = part.paper
    PaperPart.objects.filter(pk=part.pk).update(status=PaperPart.Status.RUNNING)
    try:
        completion = _ask(paper, reading.part_messages(part), "paper")
    except Cancelled:
        _fail_part(part, "cancelled")
        return
    except Exception as exc:  # noqa: BLE001 - every failure ends the part
        code, detail = _failure(exc)
        logger.warning("paper part %s failed: %s %s", part.pk, code, detail)
        _fail_part(part, code, detail)
        return

    part.notes = completion.answer.strip()
    part.status = PaperPart.Status.DONE
    part.prompt_tokens = completion.prompt_tokens
    part.completion_tokens = completion.completion_tokens
    part.save(update_fields=["notes", "status", "prompt_tokens", "completion_tokens"])


def _fail_part(part, code, detail=""):
    part.status = PaperPart.Status.FAILED
    part.failure_code = code
    part.failure_detail = detail[:2000]
    part.save(update_fields=["status", "failure_code", "failure_detail"])


def _failure(exc):
    if isinstance(exc, CompletionFailure):
        return exc.code, exc.detail
    code, detail = failures.classify(exc)
    if code == "internal":
        logger.exception("reading a paper part broke")
    return code, detail


def _ask(paper, messages, kind):
    profile = ModelProfile.ensure(paper.model)
    prompt_estimate = estimate_tokens(messages)
    return complete(
        profile,
        messages,
        output_budget(profile, prompt_estimate),
        user_id=paper.owner_id,
        kind=kind,
        priority=BATCH,
        stop_key=paper.stop_key,
        prompt_estimate=prompt_estimate,
    )


def summarise_if_read(paper):
    """Write the summary once every part is read; runs once per paper."""
    if paper.parts.exclude(status__in=PaperPart.FINISHED_STATUSES).exists():
        return
    claimed = Paper.objects.filter(pk=paper.pk, status=Paper.Status.READING).update(
        status=Paper.Status.SUMMARISING
    )
    if not claimed:
        return

    paper.refresh_from_db()
    read = list(
        paper.parts.filter(status=PaperPart.Status.DONE).select_related("section")
    )
    if not read:
        _end(paper, Paper.Status.FAILED, "nothing_read")
        return
    try:
        paper.summary = _summarise(paper, reading.notes_passages(read))
    except Cancelled:
        _end(paper, Paper.Status.CANCELLED)
        return
    except Exception as exc:  # noqa: BLE001 - every failure ends the paper
        code, detail = _failure(exc)
        logger.warning("summary of paper %s failed: %s %s", paper.pk, code, detail)
        _end(paper, Paper.Status.FAILED, code, detail)
        return
    _end(paper, Paper.Status.DONE)


def _summarise(paper, passages):
    """The summary from the notes, condensing them in rounds until they fit."""
    profile = ModelProfile.ensure(paper.model)
    budget = reading.reduce_budget(profile)
    rounds = 0
    while len(passages) > 1 and reading.passages_tokens(passages) > budget:
        groups = reading.group_passages(passages, budget)
        if len(groups) >= len(passages):
            # Every note alone fills the budget: condensing cannot shrink
            # them further, and the reduce request reports the overflow.
            break
        rounds += 1
        logger.info(
            "paper %s: condensing %s notes into %s (round %s)",
            paper.pk,
            len(passages),
            len(groups),
            rounds,
        )
        passages = [_condense(paper, group) for group in groups]

    completion = _ask(paper, reading.reduce_messages(paper, passages), "paper")
    return completion.answer.strip()


def _condense(paper, group):
    completion = _ask(paper, reading.combine_messages(paper, group), "paper")
    refs = "; ".join(dict.fromkeys(REF_IN_TEXT.findall(completion.answer)))
    return reading.passage(refs or "notes", completion.answer.strip())


def _end(paper, status, code="", detail=""):
    paper.status = status
    paper.failure_code = code
    paper.failure_detail = detail[:2000]
    paper.finished_at = timezone.now()
    paper.save(
        update_fields=[
            "status",
            "summary",
            "failure_code",
            "failure_detail",
            "finished_at",
        ]
    )
    logger.info("paper %s ended %s %s", paper.pk, status, code)
