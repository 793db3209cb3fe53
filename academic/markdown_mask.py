"""Hiding code, math, link targets and markup in Markdown from the model.

Markdown has no parser here that reports exact source positions for inline
elements, so this works with regular expressions in two steps: fenced code
blocks and front matter line by line, then one left-to-right pattern over the
rest in which the earliest match wins (code before math, so that a `$` inside
code stays code). Link and image text stays prose; the target is protected.
"""

import re

from academic.placeholders import mask_spans

FENCE_OPENING = re.compile(r"[ ]{0,3}(`{3,}|~{3,})")
FRONT_MATTER = re.compile(r"---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)

INLINE_PATTERNS = [
    # Code spans: a run of backticks closed by a run of the same length.
    r"(?P<ticks>`+)[\s\S]*?(?<!`)(?P=ticks)(?!`)",
    r"\$\$[\s\S]+?\$\$",
    r"\\\[[\s\S]+?\\\]",
    r"\\\([\s\S]+?\\\)",
    # Inline math in the pandoc sense: no space inside the dollars, and not
    # followed by a digit, so that "$5 and $6" is not math.
    r"(?<![\\$])\$(?![\s$])[^$\n]+?(?<![\s\\])\$(?!\d)",
    r"<!--[\s\S]*?-->",
    r"<(?:https?|mailto|ftp):[^>\s]*>",
    r"</?[A-Za-z][^<>\n]*>",
    # Link and image targets, with an optional title; the text before
    # "](" stays editable.
    r"\]\((?:[^()\s]|\([^()\s]*\))*(?:\s+(?:\"[^\"]*\"|'[^']*'))?\)",
    r"\]\[[^\]\n]*\]",
    r"(?m:^)[ ]{0,3}\[[^\]\n]+\]:[^\n]*",
    r"https?://[^\s<>]*[^\s<>.,;:!?'\")\]]",
    # Backslash escapes: a model that drops the backslash of "\$" or "\*"
    # changes the markup.
    r"\\[!-/:-@\[-`{-~]",
]
INLINE = re.compile("|".join(f"(?:{pattern})" for pattern in INLINE_PATTERNS))


def mask_markdown(source):
    """A MaskedText of Markdown `source` with only prose left for the model."""
    block_spans = _block_spans(source)

    spans = list(block_spans)
    position = 0
    for start, end in block_spans + [(len(source), len(source))]:
        spans.extend(_inline_spans(source, position, start))
        position = end

    return mask_spans(source, spans)


def _block_spans(source):
    spans = []
    front_matter = FRONT_MATTER.match(source)
    position = front_matter.end() if front_matter else 0
    if front_matter:
        spans.append((0, front_matter.end()))

    while position < len(source):
        line_end = _line_end(source, position)
        opening = FENCE_OPENING.match(source, position, line_end)
        if opening:
            end = _fence_end(source, line_end, opening.group(1))
            spans.append((position, end))
            position = end
        else:
            position = line_end + 1
    return spans


def _fence_end(source, position, fence):
    """Where the code block whose opening line ends at `position` ends."""
    closing = re.compile(
        r"^[ ]{0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$",
        re.MULTILINE,
    )
    match = closing.search(source, position)
    return len(source) if match is None else match.end()


def _line_end(source, position):
    newline = source.find("\n", position)
    return len(source) if newline == -1 else newline


def _inline_spans(source, start, end):
    return [match.span() for match in INLINE.finditer(source, start, end)]
