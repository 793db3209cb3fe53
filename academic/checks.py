"""Checks on a chunk the model sent back, before it is accepted.

Each check compares the returned chunk with the chunk that was sent: the
placeholders in the masked texts, and braces, environments and keys in the
restored LaTeX. Comparing with the original rather than demanding absolute
balance matters because a chunk may legitimately hold only the opening half
of a group or an environment.
"""

import re
from collections import Counter
from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _

from academic.placeholders import BRACKET_PATTERN, PLACEHOLDER_PATTERN, placeholder

ENVIRONMENT_MARKER = re.compile(r"\\(begin|end)\s*\{([^{}]*)\}")
KEYED_COMMAND = re.compile(
    r"\\(?P<command>[A-Za-z]*cite[A-Za-z]*|Cite[A-Za-z]*"
    r"|(?:eq|auto|c|C|page|name|v|V)?ref|label)(?![A-Za-z])\*?"
    r"\s*(?:\[[^\]]*\]\s*)*\{(?P<keys>[^{}]*)\}"
)
COMMENT = re.compile(r"(?<!\\)((?:\\\\)*)%[^\n]*")


# The reason shown for each failure code, also for chunks kept long ago.
MESSAGES = {
    "placeholder_missing": _("A protected part of the text was lost."),
    "placeholder_duplicated": _("A protected part of the text was repeated."),
    "placeholder_unknown": _(
        "The text contains a protected part that does not belong to it."
    ),
    "placeholder_order": _("Protected parts of the text were moved out of order."),
    "braces": _("Braces are unbalanced."),
    "environments": _("LaTeX environments were changed."),
    "keys": _("Citation, reference or label keys were changed."),
}


@dataclass(frozen=True)
class CheckFailure:
    """Why a returned chunk cannot be used: a code, a short translatable
    message for the review page, and details for the retry prompt and logs."""

    code: str
    message: str
    details: str


def check_chunk(masked, sent_chunk, returned_chunk):
    """The failures of `returned_chunk`, the model's answer to `sent_chunk`.

    Both chunks are masked text belonging to the MaskedText `masked`. An
    empty list means the chunk may be used.
    """
    failures = check_placeholders(sent_chunk, returned_chunk)

    original = masked.restore(sent_chunk)
    result = masked.restore(returned_chunk)
    failures += check_braces(original, result)
    failures += check_environments(original, result)
    failures += check_keys(original, result)
    return failures


def check_placeholders(sent_chunk, returned_chunk):
    """Every placeholder sent comes back exactly once, in order, and no other."""
    expected = [int(number) for number in PLACEHOLDER_PATTERN.findall(sent_chunk)]
    returned = [int(number) for number in PLACEHOLDER_PATTERN.findall(returned_chunk)]
    failures = []

    missing = [number for number in expected if number not in returned]
    if missing:
        failures.append(
            CheckFailure(
                "placeholder_missing",
                MESSAGES["placeholder_missing"],
                _describe_placeholders("missing", missing),
            )
        )

    counts = Counter(returned)
    duplicated = [number for number in expected if counts[number] > 1]
    if duplicated:
        failures.append(
            CheckFailure(
                "placeholder_duplicated",
                MESSAGES["placeholder_duplicated"],
                _describe_placeholders("repeated", duplicated),
            )
        )

    foreign = sorted(set(returned) - set(expected))
    stray = BRACKET_PATTERN.findall(PLACEHOLDER_PATTERN.sub("", returned_chunk))
    if foreign or stray:
        failures.append(
            CheckFailure(
                "placeholder_unknown",
                MESSAGES["placeholder_unknown"],
                _describe_placeholders("unexpected", foreign)
                + (f"; {len(stray)} stray bracket(s)" if stray else ""),
            )
        )

    if not failures and returned != expected:
        failures.append(
            CheckFailure(
                "placeholder_order",
                MESSAGES["placeholder_order"],
                "sent "
                + "".join(map(placeholder, expected))
                + ", returned "
                + "".join(map(placeholder, returned)),
            )
        )
    return failures


def check_braces(original, result):
    """Braces open and close as in the original (escaped braces aside)."""
    expected = brace_profile(original)
    found = brace_profile(result)
    if found == expected:
        return []

    return [
        CheckFailure(
            "braces",
            MESSAGES["braces"],
            f"expected net {expected[0]:+d} (lowest depth {expected[1]}), "
            f"found net {found[0]:+d} (lowest depth {found[1]})",
        )
    ]


def check_environments(original, result):
    """The same \\begin and \\end markers, as a multiset."""
    expected = Counter(environment_markers(original))
    found = Counter(environment_markers(result))
    if found == expected:
        return []

    lost = sorted((expected - found).elements())
    added = sorted((found - expected).elements())
    return [
        CheckFailure(
            "environments",
            MESSAGES["environments"],
            f"lost {_format_markers(lost)}; added {_format_markers(added)}",
        )
    ]


def check_keys(original, result):
    """The same citation, reference and label keys, in the same order."""
    expected = keyed_commands(original)
    found = keyed_commands(result)
    if found == expected:
        return []

    return [
        CheckFailure(
            "keys",
            MESSAGES["keys"],
            f"expected {_format_keys(expected)}; found {_format_keys(found)}",
        )
    ]


def brace_profile(text):
    """(net change in depth, lowest depth reached) over unescaped braces,
    outside comments."""
    depth = 0
    lowest = 0
    position = 0
    text = strip_comments(text)
    while position < len(text):
        character = text[position]
        if character == "\\":
            position += 2
            continue
        if character == "{":
            depth += 1
        elif character == "}":
            depth -= 1
            lowest = min(lowest, depth)
        position += 1
    return depth, lowest


def environment_markers(text):
    return [
        (kind, name.strip())
        for kind, name in ENVIRONMENT_MARKER.findall(strip_comments(text))
    ]


def keyed_commands(text):
    """[(command, [keys])] for each citation, reference or label command."""
    return [
        (match["command"], [key.strip() for key in match["keys"].split(",")])
        for match in KEYED_COMMAND.finditer(strip_comments(text))
    ]


def strip_comments(text):
    return COMMENT.sub(r"\1", text)


def _describe_placeholders(state, numbers):
    return f"{state}: " + " ".join(placeholder(number) for number in numbers)


def _format_markers(markers):
    if not markers:
        return "none"
    return " ".join(f"\\{kind}{{{name}}}" for kind, name in markers)


def _format_keys(commands):
    return " ".join(f"\\{command}{{{','.join(keys)}}}" for command, keys in commands)
