"""The messages that ask a model to explain a part of a source file, and then
the whole project, from the parsers' map.

Source lines travel numbered ("12| code") inside <source path="..."> tags,
so that the model can cite `path:line` without counting. The map comes
from academic.codemap: the model is told it is exact and asked to explain,
not to re-derive, the structure.
"""

ANSWER_LANGUAGES = {"zh-hans": "Simplified Chinese", "en": "English"}

SYSTEM = (
    "You explain source code projects to researchers who need to grasp "
    "quickly what a codebase does. The project map you are given was "
    "produced by a parser and is exact: rely on it for names, files and "
    "line numbers, and explain rather than restate it. Cite code as "
    "path:line (for example src/app.py:42) every time you refer to it, "
    "using only paths and lines that appear in what you were given. "
    "Answer in {language}, in Markdown."
)

PART_REQUEST = (
    "Summarise this part of a file: what it does, its main classes and "
    "functions with their path:line, notable algorithms, and risks or code "
    "smells with their path:line. Be brief: at most ten bullet points."
)

OVERVIEW_REQUEST = (
    "Write an overview of the whole project with these sections: Purpose; "
    "Architecture (the main modules and how they call each other); Entry "
    "points; How to build and run; Notable algorithms; Risks and smells. "
    "Cite path:line for every claim about the code."
)


def system_message(language):
    answer_language = ANSWER_LANGUAGES.get(language, ANSWER_LANGUAGES["en"])
    return {"role": "system", "content": SYSTEM.format(language=answer_language)}


def numbered(lines, first_line):
    return "\n".join(
        f"{number}| {line}" for number, line in enumerate(lines, start=first_line)
    )


def part_messages(language, path, file_map, lines, first_line, total_lines):
    last_line = first_line + len(lines) - 1
    parts = []
    if file_map:
        parts.append(f"Map of this file:\n{file_map}")
    parts.append(
        f"Source file {path}, lines {first_line}-{last_line} of {total_lines}:\n"
        f'<source path="{path}">\n{numbered(lines, first_line)}\n</source>'
    )
    parts.append(PART_REQUEST)
    return [system_message(language), {"role": "user", "content": "\n\n".join(parts)}]


def overview_messages(language, project_name, map_text, summaries):
    """`summaries` is a list of (heading, text) in file order."""
    written = "\n\n".join(f"### {heading}\n{text}" for heading, text in summaries)
    content = (
        f"Project: {project_name}\n\n"
        f"Project map:\n{map_text}\n\n"
        f"Summaries of its files:\n{written}\n\n{OVERVIEW_REQUEST}"
    )
    return [system_message(language), {"role": "user", "content": content}]


def conversation_context(project_name, map_text, overview):
    """What a follow-up conversation's system message carries."""
    parts = [
        f"The user is asking about the code project {project_name}. Its map, "
        "produced by a parser, is exact; cite code as path:line from it.",
        f"Project map:\n{map_text}",
    ]
    if overview:
        parts.append(f"Overview written earlier:\n{overview}")
    return "\n\n".join(parts)
