"""The simulator's code-reading mode: answers built from the prompt of a code
analysis (academic.code_prompts), as a model that read it carefully would.

Three kinds of request are recognised:

    a part of a file     the user message holds <source path="..."> with
                         numbered lines; the answer names what the file's
                         map places within those lines, as path:line
    the overview         the user message holds "Project map:" and
                         "Summaries of its files:"; the answer has the
                         overview's sections, citing the map's entry points
                         and imports and each summarised part
    a follow-up question the system message holds "Project map:"; the
                         answer quotes the map's lines that name a word of
                         the question

So a test sees which references reached the model by what comes back.
"""

import re

SOURCE_BLOCK = re.compile(
    r'<source path="(?P<path>[^"]+)">\n(?P<body>.*?)\n</source>', re.DOTALL
)
NUMBERED_LINE = re.compile(r"^(?P<number>\d+)\| ", re.MULTILINE)
MAP_ENTRY = re.compile(
    r"^\s*(?P<kind>class|function) (?P<name>\S+?)(?:\([^)]*\))? "
    r"(?P<path>\S+):(?P<line>\d+)",
    re.MULTILINE,
)
METHOD = re.compile(r"(?P<name>[\w~:]+) (?P<path>\S+):(?P<line>\d+)")
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def answer_for(messages):
    """The answer to a code-reading request, or None for any other."""
    system = _text_of(messages, "system")
    user = _last_user(messages)
    source = SOURCE_BLOCK.search(user)
    if source:
        return _part_answer(user, source)
    if "Project map:" in user and "Summaries of its files:" in user:
        return _overview_answer(user)
    if "Project map:" in system:
        return _follow_up_answer(system, user)
    return None


def _part_answer(user, source):
    path = source["path"]
    numbers = [int(m["number"]) for m in NUMBERED_LINE.finditer(source["body"])]
    first, last = (numbers[0], numbers[-1]) if numbers else (1, 1)
    found = [
        f"- {kind} `{name}` at `{path}:{line}`"
        for kind, name, line in _definitions(user, path)
        if first <= line <= last
    ]
    lines = [
        f"This part of `{path}` (lines {first}-{last}) starts at `{path}:{first}`.",
        "",
    ]
    lines += found or [f"- No definitions in `{path}:{first}-{last}`."]
    return "\n".join(lines)


def _definitions(text, path):
    """(kind, name, line) of the map's classes, methods and functions."""
    found = []
    for match in MAP_ENTRY.finditer(text):
        if match["path"] != path:
            continue
        found.append((match["kind"], match["name"], int(match["line"])))
        rest = text[match.end() : text.find("\n", match.end())]
        if "; methods: " in rest:
            for method in METHOD.finditer(rest.split("; methods: ", 1)[1]):
                found.append(("method", method["name"], int(method["line"])))
    return found


def _overview_answer(user):
    project = re.search(r"^Project: (.+)$", user, re.MULTILINE)
    map_part = user.split("Project map:", 1)[1].split("Summaries of its files:")[0]
    entries = [line for line in map_part.splitlines() if line.startswith("- ")]
    headings = re.findall(r"^### (\S+)$", user, re.MULTILINE)
    importers = re.findall(
        r"^(\S+) \(\d+ lines[^\n]*\n\s+imports project files: ([^\n]+)",
        map_part,
        re.MULTILINE,
    )
    name = project[1] if project else "the project"
    sections = [
        f"## Purpose\n\n{name} as read from its map and summaries.",
        "## Architecture\n\n"
        + (
            "\n".join(
                f"- `{path}:1` imports `{targets}`" for path, targets in importers
            )
            or "- No imports between the project's files."
        ),
        "## Entry points\n\n" + ("\n".join(entries) or "- none"),
        "## How to build and run\n\nSee the build files in the map.",
        "## Notable algorithms\n\n"
        + "\n".join(f"- summarised: `{heading}`" for heading in headings),
        "## Risks and smells\n\nNone beyond those in the summaries.",
    ]
    return "\n\n".join(sections)


def _follow_up_answer(system, question):
    words = {word.lower() for word in WORD.findall(question)}
    quoted = []
    for line in system.splitlines():
        for match in MAP_ENTRY.finditer(line):
            if match["name"].lower() in words:
                quoted.append(
                    f"- {match['kind']} `{match['name']}` is at "
                    f"`{match['path']}:{match['line']}`"
                )
        for method in METHOD.finditer(line.split("; methods: ", 1)[-1]):
            if "; methods: " in line and method["name"].lower() in words:
                quoted.append(
                    f"- method `{method['name']}` is at "
                    f"`{method['path']}:{method['line']}`"
                )
    if not quoted:
        return "The project map names nothing from the question."
    return "From the project map:\n\n" + "\n".join(dict.fromkeys(quoted))


def _text_of(messages, role):
    return "\n".join(
        str(message.get("content") or "")
        for message in messages
        if message.get("role") == role and isinstance(message.get("content"), str)
    )


def _last_user(messages):
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""
