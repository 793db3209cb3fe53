"""The messages that ask a model to polish, check or translate one chunk, and
reading its answer back.

The chunk travels between <text> and </text> tags: models keep such a frame
reliably, and an answer that wraps the text in a sentence of its own
("Here is the polished text:") can still be read. Whitespace around the
chunk is not sent; it is put back around the answer, because models trim it
and blank lines carry paragraph breaks.
"""

import re
from dataclasses import dataclass

TEXT_OPEN = "<text>"
TEXT_CLOSE = "</text>"
ANSWER_TEXT = re.compile(r"<text>\n?(?P<text>.*?)\n?</text>", re.DOTALL)
EDGE_SPACE = re.compile(r"\A(?P<lead>\s*)(?P<core>.*?)(?P<trail>\s*)\Z", re.DOTALL)

PLACEHOLDER_RULES = (
    "Tokens such as ⟦3⟧ stand for parts of the document that must not change "
    "(formulas, citations, commands, comments). Copy every such token exactly "
    "once, in the same order, and add none. Keep the line breaks between "
    "paragraphs. Answer with the revised text only, between <text> and "
    "</text>, with no comment before or after."
)

TASK_INSTRUCTIONS = {
    "polish": (
        "You are an experienced editor of academic papers. Improve the text "
        "between <text> and </text>: academic tone, clarity, grammar and "
        "concision. Do not add claims, results or references. Keep the "
        "language of the text."
    ),
    "grammar": (
        "You are a careful proofreader of academic papers. Correct only "
        "grammar, spelling and punctuation errors in the text between <text> "
        "and </text>, with the smallest edits possible. Change nothing else, "
        "and keep the language of the text."
    ),
    "zh_en": (
        "You are a professional translator of academic papers. Translate the "
        "Chinese text between <text> and </text> into fluent academic "
        "English. Text already in English stays as it is."
    ),
    "en_zh": (
        "You are a professional translator of academic papers. Translate the "
        "English text between <text> and </text> into fluent academic "
        "Simplified Chinese. Text already in Chinese stays as it is."
    ),
}

PRESET_INSTRUCTIONS = {
    "journal": "Aim for the style of a peer-reviewed journal.",
    "concise": "Make the text as concise as its content allows.",
    "keep_voice": (
        "Keep the author's voice and wording wherever they are correct; change "
        "only what is wrong or unclear."
    ),
}


@dataclass(frozen=True)
class ChunkRequest:
    """What is asked of the model for one chunk."""

    task: str
    preset: str
    glossary: str
    masked_chunk: str


def split_edges(text):
    """(leading whitespace, core, trailing whitespace) of `text`."""
    match = EDGE_SPACE.match(text)
    return match["lead"], match["core"], match["trail"]


def build_messages(request, rejection=None):
    """The chat messages for `request`; `rejection` says why a previous
    answer could not be used, so that the model can avoid the fault."""
    _lead, core, _trail = split_edges(request.masked_chunk)
    parts = []
    if request.glossary.strip():
        parts.append(
            "Use these fixed terms (source = required wording):\n"
            + request.glossary.strip()
        )
    if rejection:
        parts.append(
            "A previous answer for this text was rejected because it damaged "
            f"the document: {rejection}. Edit the original text again and "
            "avoid that fault."
        )
    parts.append(f"{TEXT_OPEN}\n{core}\n{TEXT_CLOSE}")
    return [
        {"role": "system", "content": system_prompt(request)},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def system_prompt(request):
    instructions = [TASK_INSTRUCTIONS[request.task]]
    if request.task == "polish":
        instructions.append(PRESET_INSTRUCTIONS[request.preset])
    instructions.append(PLACEHOLDER_RULES)
    return " ".join(instructions)


def read_answer(answer, masked_chunk):
    """The revised masked chunk from the model's `answer`, with the chunk's
    own surrounding whitespace put back."""
    lead, _core, trail = split_edges(masked_chunk)
    match = ANSWER_TEXT.search(answer)
    text = match["text"] if match else answer
    return lead + text.strip() + trail
