"""Placeholders that stand in for text the model must not touch.

A placeholder looks like ⟦12⟧: mathematical white square brackets around a
number. Models copy such tokens verbatim far more reliably than XML-like tags,
and the brackets never occur in LaTeX or Markdown syntax. Should a document
contain them anyway, each one is itself hidden behind a placeholder, so in a
masked text the brackets belong to placeholders only.
"""

import re
from dataclasses import dataclass, field

OPEN_BRACKET = "⟦"
CLOSE_BRACKET = "⟧"
PLACEHOLDER_PATTERN = re.compile(r"⟦(\d+)⟧")
BRACKET_PATTERN = re.compile("[⟦⟧]")

# Protected spans separated by no more than this are hidden together: one
# placeholder for "\cite{a} \cite{b}" or a run of comment lines is easier for
# a model to keep than several. A blank line is never swallowed, so paragraph
# breaks stay visible for chunking.
MERGEABLE_GAP = re.compile(r"[ \t]*\n?[ \t]*")


def placeholder(number):
    return f"{OPEN_BRACKET}{number}{CLOSE_BRACKET}"


def placeholder_numbers(text):
    """The numbers of the placeholders in `text`, in order of appearance."""
    return [int(number) for number in PLACEHOLDER_PATTERN.findall(text)]


@dataclass
class MaskedText:
    """A text with its protected parts replaced by placeholders.

    `originals[n]` is the text behind placeholder n (numbering starts at 1).
    """

    text: str
    originals: dict[int, str] = field(default_factory=dict)

    def restore(self, masked_text):
        """`masked_text` with every known placeholder replaced by its original.

        Unknown placeholders are left as they are; the checks report them.
        """
        return PLACEHOLDER_PATTERN.sub(self._original_for, masked_text)

    def _original_for(self, match):
        return self.originals.get(int(match.group(1)), match.group(0))


def mask_spans(source, spans):
    """`source` with each protected (start, end) span behind a placeholder.

    Spans may overlap and come in any order. Placeholder brackets that occur
    in `source` are always protected, which keeps placeholders unambiguous.
    """
    all_spans = list(spans)
    all_spans.extend(
        (match.start(), match.end()) for match in BRACKET_PATTERN.finditer(source)
    )

    pieces = []
    originals = {}
    position = 0
    for start, end in _merge_spans(source, all_spans):
        number = len(originals) + 1
        originals[number] = source[start:end]
        pieces.append(source[position:start])
        pieces.append(placeholder(number))
        position = end

    pieces.append(source[position:])
    return MaskedText(text="".join(pieces), originals=originals)


def _merge_spans(source, spans):
    merged = []
    for start, end in sorted(span for span in spans if span[0] < span[1]):
        if merged and _joins(source, merged[-1][1], start):
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _joins(source, previous_end, start):
    if start <= previous_end:
        return True
    return MERGEABLE_GAP.fullmatch(source, previous_end, start) is not None
