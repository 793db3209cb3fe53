"""Word-level changes between an original text and a model's revision, each
one acceptable or rejectable on its own.

Chinese has no spaces, and a run of Han characters is many words: jieba cuts
such runs into words, other text is cut into words, spaces and single marks.
diff-match-patch then compares the two word sequences (each word stands for
one character, the way it compares lines), and every change is trimmed to
the characters that actually differ, so "较好" to "更好" shows as "较" to
"更". Latin words are kept whole.
"""

import functools
import logging
import re
from dataclasses import dataclass

import jieba
from diff_match_patch import diff_match_patch

HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
OTHER_TOKEN = re.compile(r"\w+|\s+|.", re.DOTALL)


@dataclass(frozen=True)
class Change:
    """Original text [start, end) replaced by `replacement`."""

    index: int
    start: int
    end: int
    original: str
    replacement: str


def tokenize(text):
    """`text` as a list of words, spaces and marks that join back to it."""
    tokens = []
    position = 0
    for run in HAN_RUN.finditer(text):
        tokens.extend(OTHER_TOKEN.findall(text, position, run.start()))
        tokens.extend(_segmenter().cut(run.group(), HMM=False))
        position = run.end()
    tokens.extend(OTHER_TOKEN.findall(text, position))
    return tokens


def diff_changes(original, revised):
    """The changes that turn `original` into `revised`, in order."""
    pairs = []
    position = 0
    pending = None
    for operation, text in _token_diff(original, revised):
        if operation == diff_match_patch.DIFF_EQUAL:
            if pending:
                pairs.append(pending)
                pending = None
            position += len(text)
            continue

        if pending is None:
            pending = [position, position, "", ""]
        if operation == diff_match_patch.DIFF_DELETE:
            pending[1] += len(text)
            pending[2] += text
            position += len(text)
        else:
            pending[3] += text
    if pending:
        pairs.append(pending)

    changes = []
    for start, end, removed, inserted in pairs:
        trimmed = _trim(start, end, removed, inserted)
        if trimmed:
            changes.append(Change(len(changes), *trimmed))
    return changes


def merge(original, changes, decisions):
    """`original` with the accepted changes applied.

    `decisions` maps a change's index to True (accept) or False (reject); a
    change without a decision is rejected.
    """
    pieces = []
    position = 0
    for change in sorted(changes, key=lambda change: change.start):
        pieces.append(original[position : change.start])
        if decisions.get(change.index, False):
            pieces.append(change.replacement)
        else:
            pieces.append(original[change.start : change.end])
        position = change.end
    pieces.append(original[position:])
    return "".join(pieces)


@functools.cache
def _segmenter():
    # jieba's dictionary ships inside the package; building its prefix
    # dictionary takes about a second once per process, so it is built on
    # first use rather than at import.
    jieba.setLogLevel(logging.WARNING)
    return jieba.Tokenizer()


def _token_diff(original, revised):
    codes = {}
    words = []

    def encode(tokens):
        encoded = []
        for token in tokens:
            if token not in codes:
                codes[token] = chr(len(words) + 1)
                words.append(token)
            encoded.append(codes[token])
        return "".join(encoded)

    encoded_original = encode(tokenize(original))
    encoded_revised = encode(tokenize(revised))
    differ = diff_match_patch()
    # No time limit: a diff cut short by the clock would differ from run to
    # run, and chunks are small enough to diff in full.
    differ.Diff_Timeout = 0
    diffs = differ.diff_main(encoded_original, encoded_revised, False)
    return [
        (operation, "".join(words[ord(code) - 1] for code in encoded))
        for operation, encoded in diffs
    ]


def _trimmable(character):
    # Han characters are words or parts of words on their own; a Latin word
    # is shown whole ("have" to "has", not "ve" to "s").
    return HAN_RUN.match(character) is not None or not character.isalnum()


def _trim(start, end, removed, inserted):
    prefix = 0
    limit = min(len(removed), len(inserted))
    while (
        prefix < limit
        and removed[prefix] == inserted[prefix]
        and _trimmable(removed[prefix])
    ):
        prefix += 1

    suffix = 0
    limit -= prefix
    while (
        suffix < limit
        and removed[-1 - suffix] == inserted[-1 - suffix]
        and _trimmable(removed[-1 - suffix])
    ):
        suffix += 1

    removed = removed[prefix : len(removed) - suffix]
    inserted = inserted[prefix : len(inserted) - suffix]
    if not removed and not inserted:
        return None
    return start + prefix, end - suffix, removed, inserted
