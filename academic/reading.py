"""Reading a paper: its parts within the model's budget, the prompts of the
map and reduce steps, and the passages a question about it is answered from.

A paper longer than one request can hold is cut into parts (map): each
section, and a section longer than the budget into pieces, every piece read
by its own request. The notes of all parts then make the summary (reduce);
notes too long for one request are condensed in rounds first. Nothing is
cut off to fit: every part is read, and a part that failed is named on the
paper's page with the reason.

Every passage sent carries its reference, [p. N] for a PDF page or
[§ name] for a section elsewhere, and the prompts ask for each statement to
end with the reference it comes from, so the reader can check it.
"""

import html
import math
import re
from collections import Counter

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from academic.chunking import split_into_chunks
from academic.models import Paper, PaperPart, PaperSection
from chat.models import Message
from chat.prompt import (
    SAFETY_MARGIN,
    build_messages,
    count_text_tokens,
    estimate_tokens,
)

# Parts are kept well below what a model could take, as polish chunks are:
# several run side by side, and a failed one costs less to read again.
PART_TOKEN_CEILING = 3000
PART_TOKEN_FLOOR = 200
# What the notes on one part, and the summary, are given to write.
NOTES_TOKENS = 800
SUMMARY_TOKENS = 2500
# The passage tags around each block of text, in tokens.
PASSAGE_OVERHEAD = 16
# The share of a chat model's input the passages may fill; the rest is for
# the conversation so far and the question.
CHAT_PASSAGE_SHARE = 0.6
RETRIEVAL_WINDOW_TOKENS = 400
STOP_KEY_SECONDS = 7 * 24 * 3600

LANGUAGE_NAMES = {"zh-hans": "Chinese (简体中文)", "en": "English"}
SUMMARY_HEADINGS = [
    "## Problem",
    "## Method",
    "## Key results",
    "## Limits",
    "## What to read next",
    "## Glossary",
    "## Outline",
]

MAP_INSTRUCTIONS = """You read one part of a research paper for a reader who \
will check every statement against the paper.
Write concise notes as a Markdown list: the claims, the method, every result \
with its numbers exactly as written, definitions of terms, and the works the \
part points to. One statement per bullet; end each bullet with the reference \
of the passage it comes from in square brackets, copied from the passage's \
ref attribute, e.g. [p. 3] or [§ Methods]. Say nothing the passages do not \
say. Formulas were extracted as text and may have lost their layout."""

COMBINE_INSTRUCTIONS = """You condense notes on parts of a research paper. \
Merge them into shorter notes as a Markdown list, keeping every result with \
its numbers and keeping, at the end of each bullet, the square-bracket \
references ([p. N] or [§ name]) of the notes it comes from. Add nothing."""

REDUCE_INSTRUCTIONS = """You write a reader's summary of a research paper \
from notes on all of its parts, in order. Use exactly these Markdown \
headings:
{headings}
Under Key results give the numbers as the notes give them. Under Glossary \
write a table with the columns 中文 | English | meaning, for the paper's \
terms. Under Outline list the paper's sections in order, each as \
"English title / 中文标题" with one line on what it does. End every \
statement, table row and outline item with the reference(s) it comes from \
in square brackets, copied from the notes: [p. N] or [§ name]. Use only what \
the notes say; where they do not say (e.g. no limits are stated), write \
that. Write the statements in {language}."""

CHAT_INSTRUCTIONS = """You answer a reader's questions about the paper \
"{title}" from the passages of it below, and from nothing else.
Quote the passages you rely on in quotation marks, each with its reference \
in square brackets as given in the passage's ref attribute, e.g. "…" [p. 4]. \
If the passages do not answer the question, say plainly that the paper does \
not answer it (or that these passages do not), and do not answer from \
general knowledge. The passages were chosen by the words they share with \
the question, so an answer may lie in a part not shown; say so when that \
seems likely."""

NO_PASSAGES = (
    "No passage of the paper shares words with this question: the paper "
    "does not appear to answer it."
)

# Why a part was not read, beyond the model service's own failures.
PART_FAILURES = {
    "cancelled": _("Reading was cancelled before this part."),
}


# ---------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------


def block_ref(block, section):
    if block.get("page") is not None:
        return f"p. {block['page']}"
    return f"§ {section.label}"


def part_refs(part, section):
    """The distinct references of a part's blocks, in order."""
    refs = []
    for block in part.blocks:
        ref = block_ref(block, section)
        if ref not in refs:
            refs.append(ref)
    return refs


def passage(ref, text, section_title=""):
    # The paper's own text must not be able to close the tag early.
    body = text.replace("</passage", "</ passage")
    title = html.escape(section_title, quote=True)
    # A section title in the ref is copied back by the model as written, so
    # it is not escaped; only a quote, which would end the attribute, goes.
    ref = ref.replace('"', "'")
    return f'<passage ref="{ref}" section="{title}">\n{body}\n</passage>'


def paper_block(paper, passages):
    title = html.escape(paper.title, quote=True)
    return f'<paper title="{title}">\n' + "\n".join(passages) + "\n</paper>"


# ---------------------------------------------------------------------------
# Map: cutting the sections into parts within the budget
# ---------------------------------------------------------------------------


def part_budget(profile):
    """The most estimated tokens of paper text one map request may carry."""
    overhead = estimate_tokens(map_messages(Paper(title=""), [])) + SAFETY_MARGIN
    thinking = settings.REASONING_MIN_OUTPUT_TOKENS if profile.is_reasoning else 0
    limits = [
        PART_TOKEN_CEILING,
        profile.input_limit - overhead,
        profile.context_window - overhead - NOTES_TOKENS - thinking - SAFETY_MARGIN,
    ]
    return max(PART_TOKEN_FLOOR, math.floor(min(limits)))


def cut_into_parts(sections, budget):
    """[(section index, [block])] covering every block of every section.

    Consecutive blocks of one section share a part while they fit the
    budget; a block longer than the budget is cut (academic.chunking, which
    never drops a character) into blocks of the same page.
    """
    parts = []
    for index, section in enumerate(sections):
        current, current_tokens = [], 0
        for block in _fitting_blocks(section.blocks, budget):
            tokens = count_text_tokens(block["text"]) + PASSAGE_OVERHEAD
            if current and current_tokens + tokens > budget:
                parts.append((index, current))
                current, current_tokens = [], 0
            current.append(block)
            current_tokens += tokens
        if current:
            parts.append((index, current))
    return parts


def _fitting_blocks(blocks, budget):
    room = max(1, budget - PASSAGE_OVERHEAD)
    for block in blocks:
        for piece in split_into_chunks(block.text, room):
            yield {"page": block.page, "text": piece}


def map_messages(paper, passages, section_title=""):
    request = "Notes on this part"
    if section_title:
        request += f' (section "{section_title}")'
    return [
        {"role": "system", "content": MAP_INSTRUCTIONS},
        {"role": "user", "content": f"{paper_block(paper, passages)}\n\n{request}."},
    ]


def part_messages(part):
    section = part.section
    passages = [
        passage(block_ref(block, section), block["text"], section.title)
        for block in part.blocks
    ]
    return map_messages(part.paper, passages, section.title)


# ---------------------------------------------------------------------------
# Reduce: from the notes of every part to the summary
# ---------------------------------------------------------------------------


def notes_passages(parts):
    """The notes of read parts, each a passage named by its references."""
    passages = []
    for part in parts:
        refs = "; ".join(part_refs(part, part.section))
        passages.append(passage(refs, part.notes.strip(), part.section.title))
    return passages


def reduce_messages(paper, passages):
    instructions = REDUCE_INSTRUCTIONS.format(
        headings="\n".join(SUMMARY_HEADINGS),
        language=LANGUAGE_NAMES.get(paper.language, "Chinese (简体中文)"),
    )
    return [
        {"role": "system", "content": instructions},
        {
            "role": "user",
            "content": f"{paper_block(paper, passages)}\n\nThe summary.",
        },
    ]


def combine_messages(paper, passages):
    return [
        {"role": "system", "content": COMBINE_INSTRUCTIONS},
        {"role": "user", "content": f"{paper_block(paper, passages)}\n\nThe notes."},
    ]


def reduce_budget(profile):
    """The most estimated tokens of notes one reduce request may carry."""
    overhead = estimate_tokens(reduce_messages(Paper(title=""), [])) + SAFETY_MARGIN
    thinking = settings.REASONING_MIN_OUTPUT_TOKENS if profile.is_reasoning else 0
    summary = min(SUMMARY_TOKENS, profile.max_output_tokens)
    limits = [
        profile.input_limit - overhead,
        profile.context_window - overhead - summary - thinking - SAFETY_MARGIN,
    ]
    return max(PART_TOKEN_FLOOR, math.floor(min(limits)))


def group_passages(passages, budget):
    """Consecutive passages in groups of at most `budget` tokens, two or more
    to a group where the budget allows, so that each round shrinks."""
    groups, current, current_tokens = [], [], 0
    for text in passages:
        tokens = count_text_tokens(text)
        if current and current_tokens + tokens > budget:
            groups.append(current)
            current, current_tokens = [], 0
        current.append(text)
        current_tokens += tokens
    if current:
        groups.append(current)
    return groups


def passages_tokens(passages):
    return sum(count_text_tokens(text) for text in passages)


# ---------------------------------------------------------------------------
# Creating a paper from its extracted sections
# ---------------------------------------------------------------------------


def store_paper(owner, fields, sections, profile):
    """The Paper row with its sections and parts; the parts are not queued."""
    paper = Paper.objects.create(owner=owner, **fields)
    section_rows = PaperSection.objects.bulk_create(
        PaperSection(
            paper=paper,
            position=position,
            title=section.title[:200],
            blocks=[{"page": b.page, "text": b.text} for b in section.blocks],
        )
        for position, section in enumerate(sections)
    )
    parts = cut_into_parts(sections, part_budget(profile))
    PaperPart.objects.bulk_create(
        PaperPart(
            paper=paper, section=section_rows[index], position=position, blocks=blocks
        )
        for position, (index, blocks) in enumerate(parts)
    )
    return paper


# ---------------------------------------------------------------------------
# The conversation about a paper: lexical retrieval of passages
# ---------------------------------------------------------------------------

WORD = re.compile(r"[a-z][a-z0-9-]{2,}|\d+(?:\.\d+)?")
CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
PAGE_MENTION = re.compile(r"\b(?:p\.|pp\.|page)\s*(\d+)|第\s*(\d+)\s*页", re.I)
STOPWORDS = frozenset(
    "the and for are was were this that with from what which how does did "
    "about into than then they them their there these those have has had "
    "not but can could would should its it's paper authors author use used "
    "using between also more most such each other".split()
)


def terms(text):
    """Lower-case words of three or more letters, numbers, and CJK bigrams."""
    lowered = text.lower()
    found = [w for w in WORD.findall(lowered) if w not in STOPWORDS]
    for run in CJK_RUN.findall(text):
        found.extend(run[i : i + 2] for i in range(max(1, len(run) - 1)))
    return found


def paper_passages(paper):
    """[(ref, section title, text)] of the whole paper in retrieval windows."""
    windows = []
    for section in paper.sections.all():
        for block in section.blocks:
            ref = block_ref(block, section)
            for piece in split_into_chunks(block["text"], RETRIEVAL_WINDOW_TOKENS):
                windows.append((ref, section.title, piece))
    return windows


def relevant_passages(paper, question, budget):
    """The passages of `paper` that share the most words with `question`,
    within `budget` tokens, in the paper's order.

    Plain lexical retrieval: words weighted by how rare they are in the
    paper (idf), a page the question names ("p. 4", "第4页") always in.
    It misses passages that say the same in other words; the instruction
    tells the model that an answer may lie elsewhere.
    """
    windows = paper_passages(paper)
    window_terms = [Counter(terms(text)) for _ref, _title, text in windows]
    document_frequency = Counter()
    for counted in window_terms:
        document_frequency.update(counted.keys())
    asked = set(terms(question))
    named_pages = {f"p. {a or b}" for a, b in PAGE_MENTION.findall(question)}

    scored = []
    for index, counted in enumerate(window_terms):
        score = sum(
            (1 + math.log(counted[term]))
            * math.log(1 + len(windows) / document_frequency[term])
            for term in asked
            if counted[term]
        )
        if windows[index][0] in named_pages:
            score += 1000
        if score > 0:
            scored.append((score, index))

    chosen, used = [], 0
    for _score, index in sorted(scored, reverse=True):
        ref, title, text = windows[index]
        tokens = count_text_tokens(text) + PASSAGE_OVERHEAD
        if used + tokens > budget:
            continue
        chosen.append(index)
        used += tokens
    return [windows[index] for index in sorted(chosen)]


def paper_system_prompt(reply, profile):
    """The system message of a reply in a conversation about a paper: the
    instruction and the passages relevant to the question; None elsewhere."""
    conversation = reply.conversation
    paper = Paper.objects.filter(conversation=conversation).first()
    if paper is None:
        return None

    question = (
        conversation.messages.filter(pk__lt=reply.pk, role=Message.Role.USER)
        .order_by("-created", "-id")
        .values_list("content", flat=True)
        .first()
    ) or ""
    instructions = CHAT_INSTRUCTIONS.format(title=paper.title or paper.file_name)
    history = estimate_tokens(build_messages(conversation, reply, instructions))
    room = profile.input_limit - history - SAFETY_MARGIN
    budget = max(0, min(room, int(profile.input_limit * CHAT_PASSAGE_SHARE)))

    found = relevant_passages(paper, question, budget)
    if not found:
        return f"{instructions}\n\n{paper_block(paper, [])}\n\n{NO_PASSAGES}"
    passages = [passage(ref, text, title) for ref, title, text in found]
    return f"{instructions}\n\n{paper_block(paper, passages)}"


def cancel_paper(paper):
    """Stop reading: queued parts end now, running requests at their next poll."""
    cache.set(paper.stop_key, True, STOP_KEY_SECONDS)
    paper.parts.filter(status=PaperPart.Status.QUEUED).update(
        status=PaperPart.Status.FAILED, failure_code="cancelled"
    )
    Paper.objects.filter(
        pk=paper.pk, status__in=[Paper.Status.READING, Paper.Status.SUMMARISING]
    ).update(status=Paper.Status.CANCELLED, finished_at=timezone.now())
    paper.refresh_from_db(fields=["status", "finished_at"])
