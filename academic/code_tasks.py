"""The tasks of a code analysis: a summary per part, then the overview.

Each takes an id, re-fetches, and skips rows deleted or no longer queued.
Both ask the model through assistant.completion.complete, so they wait in
the same fair admission queue as every other batch job, count against the
owner's quotas and leave usage records.
"""

import logging

from celery import shared_task
from django.core.cache import cache

from academic import code_actions, code_prompts, codebase, codemap
from academic.code_models import CodeAnalysis, CodePart
from assistant import failures
from assistant.admission import BATCH, Cancelled
from assistant.completion import CompletionFailure, complete
from assistant.models import ModelProfile
from chat.prompt import estimate_tokens, output_budget

logger = logging.getLogger(__name__)

# How long the queue position shown for an analysis stays without a refresh.
QUEUE_NOTICE_SECONDS = 2


@shared_task(ignore_result=True)
def summarise_part(part_id):
    """Summarise part `part_id`; the last part to end starts the overview."""
    try:
        part = CodePart.objects.select_related("analysis", "file").get(pk=part_id)
    except CodePart.DoesNotExist:
        logger.info("code part %s was deleted before it ran", part_id)
        return

    if part.status != CodePart.Status.QUEUED:
        logger.info("code part %s is %s, not queued; skipped", part_id, part.status)
    else:
        _summarise(part)

    analysis = part.analysis
    if analysis.parts_finished() and analysis.claim_overview():
        write_overview.delay(analysis.pk)


def _summarise(part):
    analysis = part.analysis
    try:
        if cache.get(analysis.stop_key):
            raise Cancelled(part.pk)
        part.status = CodePart.Status.RUNNING
        part.save(update_fields=["status"])
        messages = code_prompts.part_messages(
            analysis.language,
            part.file.path,
            codemap.map_for_file(
                analysis.project_map, part.file.path, code_actions.FILE_MAP_TOKENS
            ),
            part.lines(),
            part.first_line,
            len(codebase.text_lines(part.file.text)),
        )
        completion = _ask(analysis, messages, kind="code")
    except Cancelled:
        part.fail("cancelled")
        return
    except Exception as exc:  # noqa: BLE001 - every failure ends the part
        code, detail = _failure(exc, "code part", part.pk)
        part.fail(code, detail)
        return
    part.finish(completion.answer.strip())


@shared_task(ignore_result=True)
def write_overview(analysis_id):
    """Write the overview of analysis `analysis_id` from its map and summaries."""
    try:
        analysis = CodeAnalysis.objects.get(pk=analysis_id)
    except CodeAnalysis.DoesNotExist:
        logger.info("code analysis %s was deleted before its overview", analysis_id)
        return

    if analysis.status == CodeAnalysis.Status.CANCELLED:
        analysis.finish_overview("", "cancelled")
        return
    try:
        profile = ModelProfile.ensure(analysis.model)
        messages = code_actions.overview_messages(analysis, profile)
        completion = _ask(analysis, messages, kind="code")
    except Cancelled:
        analysis.finish_overview("", "cancelled")
        return
    except Exception as exc:  # noqa: BLE001 - the overview must end either way
        code, _detail = _failure(exc, "code overview", analysis.pk)
        analysis.finish_overview("", code)
        return
    analysis.finish_overview(completion.answer.strip())


def _ask(analysis, messages, kind):
    profile = ModelProfile.ensure(analysis.model)
    prompt_estimate = estimate_tokens(messages)

    def tell_position(position, eta):
        best = cache.get(analysis.queue_key)
        if best is None or position <= best:
            cache.set(analysis.queue_key, position, QUEUE_NOTICE_SECONDS)

    return complete(
        profile,
        messages,
        output_budget(profile, prompt_estimate),
        user_id=analysis.owner_id,
        kind=kind,
        priority=BATCH,
        stop_key=analysis.stop_key,
        prompt_estimate=prompt_estimate,
        on_wait=tell_position,
    )


def _failure(exc, what, pk):
    if isinstance(exc, CompletionFailure):
        code, detail = exc.code, exc.detail
    else:
        code, detail = failures.classify(exc)
    if code == "internal":
        logger.exception("%s %s failed", what, pk)
    else:
        logger.warning("%s %s failed: %s %s", what, pk, code, detail)
    return code, detail
