"""Starting and cancelling a code project analysis, cutting its files into
parts that fit the model, and opening its follow-up conversation."""

import logging
import math

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from academic import code_prompts, codebase, codemap
from academic.code_models import CodeAnalysis, CodeFile, CodePart
from assistant.models import ModelProfile
from chat.models import Conversation
from chat.prompt import SAFETY_MARGIN, count_text_tokens, estimate_tokens

logger = logging.getLogger(__name__)

# Parts are kept well below what the model could take, as polish chunks
# are: many run side by side, a failed one costs less, and a summary of
# a few hundred lines is about as much as a model keeps precise.
PART_TOKEN_CEILING = 2000
PART_TOKEN_FLOOR = 200
# Room for a file's own map in its parts' prompts.
FILE_MAP_TOKENS = 600
# The shares of the model's input the overview gives the map and the
# summaries, and the follow-up conversation gives its context.
OVERVIEW_MAP_SHARE = 0.4
CONVERSATION_CONTEXT_SHARE = 0.5
STOP_KEY_SECONDS = 7 * 24 * 3600
CUT_MARK = " [cut for space]"
# Room for the line that says how many summaries were left out.
LEFT_OUT_ALLOWANCE = 16


def part_budget(profile):
    """The most estimated tokens of numbered source one part may hold."""
    overhead = (
        estimate_tokens(code_prompts.part_messages("en", "", "", [], 1, 0))
        + FILE_MAP_TOKENS
    )
    thinking = settings.REASONING_MIN_OUTPUT_TOKENS if profile.is_reasoning else 0
    limits = [
        PART_TOKEN_CEILING,
        profile.input_limit - overhead,
        # The summary must still find room in the context after the prompt.
        profile.context_window - overhead - thinking - SAFETY_MARGIN - 512,
    ]
    return max(PART_TOKEN_FLOOR, math.floor(min(limits)))


def split_lines(text, budget):
    """[(first line, last line)] runs of `text` within `budget` tokens each.

    A run is cut after a blank line when one falls in its second half, so
    that functions tend to stay whole; a single line over the budget is a
    run of its own.
    """
    lines = codebase.text_lines(text)
    runs = []
    start = 1
    used = 0
    last_blank = None
    for number, line in enumerate(lines, start=1):
        cost = count_text_tokens(f"{number}| {line}\n")
        if used and used + cost > budget:
            cut = last_blank if last_blank and last_blank - start > 0 else number - 1
            runs.append((start, cut))
            start = cut + 1
            used = sum(
                count_text_tokens(f"{n}| {lines[n - 1]}\n")
                for n in range(start, number)
            )
            last_blank = None
        used += cost
        if not line.strip() and used > budget / 2:
            last_blank = number
    if start <= len(lines) and any(line.strip() for line in lines[start - 1 :]):
        runs.append((start, len(lines)))
    return runs


def start_analysis(owner, name, code_project, model, language):
    """Create the analysis of `code_project` (academic.codebase) and queue a
    task for every part of every file."""
    from academic.code_tasks import summarise_part, write_overview

    profile = ModelProfile.ensure(model)
    budget = part_budget(profile)
    project_map = codemap.build_map(code_project.files)

    with transaction.atomic():
        analysis = CodeAnalysis.objects.create(
            owner=owner,
            name=name[:255],
            model=model,
            language=language,
            project_map=project_map,
            skipped=code_project.skipped,
        )
        parts = []
        for position, source in enumerate(code_project.files):
            code_file = CodeFile.objects.create(
                analysis=analysis,
                position=position,
                path=source.path,
                language=source.language,
                text=source.text,
            )
            for first, last in split_lines(source.text, budget):
                parts.append(
                    CodePart(
                        analysis=analysis,
                        file=code_file,
                        position=len(parts),
                        first_line=first,
                        last_line=last,
                    )
                )
        part_ids = [part.pk for part in CodePart.objects.bulk_create(parts)]
        if part_ids:
            transaction.on_commit(
                lambda: [summarise_part.delay(part_id) for part_id in part_ids]
            )
        elif analysis.claim_overview():
            # Only empty files: the overview is written from the map alone.
            transaction.on_commit(lambda: write_overview.delay(analysis.pk))

    logger.info(
        "code analysis %s: %s files, %s parts of at most %s tokens",
        analysis.pk,
        len(code_project.files),
        len(parts),
        budget,
    )
    return analysis


def cancel_analysis(analysis):
    """Stop the analysis: queued parts end now, running ones at their next poll."""
    cache.set(analysis.stop_key, True, STOP_KEY_SECONDS)
    CodeAnalysis.objects.filter(
        pk=analysis.pk, status=CodeAnalysis.Status.RUNNING
    ).update(status=CodeAnalysis.Status.CANCELLED, finished_at=timezone.now())
    analysis.parts.filter(status=CodePart.Status.QUEUED).update(
        status=CodePart.Status.FAILED,
        failure_code="cancelled",
        finished_at=timezone.now(),
    )
    logger.info("code analysis %s cancelled", analysis.pk)


def overview_messages(analysis, profile):
    """The overview prompt, the map and the summaries cut to fit the model.

    The prompt leaves half the output cap free in the context, so that the
    overview is not starved by its own material.
    """
    overhead = estimate_tokens(
        code_prompts.overview_messages(analysis.language, analysis.name, "", [])
    )
    limit = min(
        profile.input_limit,
        profile.context_window - profile.max_output_tokens // 2 - SAFETY_MARGIN,
    )
    room = limit - overhead
    map_text = codemap.map_text(analysis.project_map, int(room * OVERVIEW_MAP_SHARE))
    left = room - count_text_tokens(map_text)
    summaries = fit_summaries(_summaries(analysis), left)
    return code_prompts.overview_messages(
        analysis.language, analysis.name, map_text, summaries
    )


def _summaries(analysis):
    parts = analysis.parts.filter(status=CodePart.Status.DONE).select_related("file")
    return [
        (f"{part.file.path}:{part.first_line}-{part.last_line}", part.summary)
        for part in parts
    ]


def _summary_cost(heading, text):
    return count_text_tokens(f"### {heading}\n{text}\n\n")


def fit_summaries(summaries, budget):
    """The summaries within `budget` tokens: each cut to an equal share when
    together they are too long, and the last ones left out when even that
    is too much. Both are said in the text, so the model does not take a
    part for the whole."""
    if sum(_summary_cost(h, t) for h, t in summaries) <= budget:
        return summaries

    share = budget // max(1, len(summaries))
    fitted = []
    used = 0
    for index, (heading, text) in enumerate(summaries):
        while _summary_cost(heading, text + CUT_MARK) > share and len(text) > 40:
            text = text[: int(len(text) * 0.8)]
        entry = (heading, text.rstrip() + CUT_MARK)
        cost = _summary_cost(*entry)
        if used + cost > budget - LEFT_OUT_ALLOWANCE:
            left = len(summaries) - index
            fitted.append(("…", f"{left} more summaries left out for space."))
            break
        fitted.append(entry)
        used += cost
    return fitted


def open_conversation(analysis):
    """The analysis's follow-up conversation, made on first use.

    It is an ordinary chat conversation whose system message also carries
    the project map and the overview (chat.prompt), cut to a share of the
    model's input so that questions and answers still fit. One opened
    before the overview is written carries the map alone, and keeps it so.
    """
    conversation = analysis.conversation
    if conversation is not None and conversation.deleted_at is None:
        return conversation

    profile = ModelProfile.ensure(analysis.model)
    budget = int(profile.input_limit * CONVERSATION_CONTEXT_SHARE)
    overview = analysis.overview if analysis.overview_failure == "" else ""
    overview_tokens = count_text_tokens(overview)
    if overview_tokens > budget // 2:
        overview = ""
        overview_tokens = 0
    map_text = codemap.map_text(analysis.project_map, budget - overview_tokens)
    conversation = Conversation.objects.create(
        user=analysis.owner,
        model=analysis.model,
        title=analysis.name[:200],
        title_is_auto=False,
        context=code_prompts.conversation_context(analysis.name, map_text, overview),
    )
    analysis.conversation = conversation
    analysis.save(update_fields=["conversation"])
    return conversation
