"""Cutting a masked document into chunks that fit the model's output limit.

Chunks are cut at paragraph breaks where possible, then at sentence ends,
then at clause marks (Chinese "，" and "；" included), then at line breaks and
spaces, and only as a last resort between any two characters. A placeholder
is never cut, and nothing is dropped: the chunks joined give back the text.
"""

import re

from academic.placeholders import PLACEHOLDER_PATTERN
from chat.prompt import count_text_tokens

# Each level's pattern matches a separator; a cut goes after it, so that
# punctuation and spacing stay with the text before them.
BOUNDARIES = [
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"[.!?]+[\"')\]]*\s+|[。！？]+[”’）」』]*\s*"),
    re.compile(r"[,;:]\s+|[，；：、]\s*"),
    re.compile(r"\n"),
    re.compile(r"\s+"),
]
ATOM = re.compile(PLACEHOLDER_PATTERN.pattern + r"|.", re.DOTALL)


def split_into_chunks(text, budget):
    """`text` cut into chunks of at most `budget` estimated tokens each.

    A chunk goes over the budget only when it is a single placeholder, which
    no cut can shorten. `"".join(chunks) == text` always holds.
    """
    if budget < 1:
        raise ValueError("the token budget must be positive")
    return [chunk for chunk in _split(text, budget, 0) if chunk]


def _split(text, budget, level):
    if count_text_tokens(text) <= budget:
        return [text]

    pieces = _cut(text, level)
    chunks = []
    current = ""
    current_tokens = 0
    for piece in pieces:
        tokens = count_text_tokens(piece)
        if current and current_tokens + tokens <= budget:
            current += piece
            current_tokens += tokens
            continue

        if current:
            chunks.append(current)
        if tokens <= budget or level >= len(BOUNDARIES):
            current, current_tokens = piece, tokens
            continue

        # Too long on its own: cut it finer, and keep the last part open so
        # that the next piece can still join it.
        finer = _split(piece, budget, level + 1)
        chunks.extend(finer[:-1])
        current = finer[-1]
        current_tokens = count_text_tokens(current)

    if current:
        chunks.append(current)
    return chunks


def _cut(text, level):
    if level >= len(BOUNDARIES):
        return [match.group() for match in ATOM.finditer(text)]

    cuts = [match.end() for match in BOUNDARIES[level].finditer(text)]
    pieces = []
    start = 0
    for cut in cuts:
        if cut > start:
            pieces.append(text[start:cut])
            start = cut
    pieces.append(text[start:])
    return [piece for piece in pieces if piece]
