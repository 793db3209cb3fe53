"""Tables a model wrote, as sanitised HTML for the preview beside the image.

Model output is untrusted: whatever the target (LaTeX tabular, Markdown pipe
table, HTML table), the preview is built or cleaned here on the server and
only the result goes to the page's innerHTML. Math in cells is marked as
`math-inline` spans, which static/chat/render.js typesets with KaTeX.
"""

import html
import re

import bleach

from chat.rendering import render_markdown

TABLE_TAGS = frozenset(
    "table caption thead tbody tfoot tr th td span p br strong em sup sub".split()
)
SPAN_LIMIT = 1000

_RULES = re.compile(
    r"\\(?:toprule|midrule|bottomrule|hline)(?:\[[^\]]*\])?"
    r"|\\(?:cline|cmidrule)(?:\([^)]*\))?\{[^}]*\}"
)
_ROW_END = re.compile(r"\\\\(?:\[[^\]]*\])?")
_CELL_SEPARATOR = re.compile(r"(?<!\\)&")
_TABULAR = re.compile(
    r"\\begin\{(?P<env>tabular\*?|tabularx|longtable)\}(?P<body>.*?)\\end\{(?P=env)\}",
    re.DOTALL,
)
_MATH = re.compile(r"(?<!\\)\$(.+?)(?<!\\)\$")
_STYLE_COMMAND = re.compile(r"\\(?:textbf|textit|emph|textrm|mathrm|text)\{([^{}]*)\}")
_ESCAPED = re.compile(r"\\([&%_#$])")


def _allow_span(tag, name, value):
    if tag in ("td", "th"):
        return name in ("colspan", "rowspan") and value.isdigit()
    return tag == "span" and name == "class" and value == "math-inline"


def _cleaner():
    return bleach.Cleaner(
        tags=TABLE_TAGS,
        attributes=_allow_span,
        protocols=[],
        strip=True,
        strip_comments=True,
    )


def preview_html(source, target):
    """Sanitised HTML of a table in `target` form (latex, markdown or html)."""
    if target == "latex":
        return _cleaner().clean(tabular_to_html(source))
    if target == "markdown":
        return render_markdown(source)
    return _cleaner().clean(source)


def tabular_to_html(source):
    """An HTML table for a LaTeX tabular, keeping multicolumn and multirow.

    Not a LaTeX interpreter: rules are dropped, a few text-style commands
    unwrapped, and any other command shows as written.
    """
    match = _TABULAR.search(source)
    body = _skip_column_spec(match.group("body")) if match else source
    body = _RULES.sub("", body)

    rows = [row for row in _ROW_END.split(body) if row.strip()]
    covered = {}
    lines = []
    for index, row in enumerate(rows):
        tag = "th" if index == 0 and len(rows) > 1 else "td"
        lines.append("<tr>" + _row_html(row, tag, covered) + "</tr>")

    if len(lines) > 1:
        return (
            f"<table><thead>{lines[0]}</thead>"
            f"<tbody>{''.join(lines[1:])}</tbody></table>"
        )
    return f"<table><tbody>{''.join(lines)}</tbody></table>"


def _row_html(row, tag, covered):
    """Cells of one row; `covered` tracks columns a multirow above spans."""
    cells = []
    column = 0
    for raw in _CELL_SEPARATOR.split(row):
        if covered.get(column, 0) > 0 and not raw.strip():
            # The empty cell LaTeX needs under a \multirow.
            covered[column] -= 1
            column += 1
            continue

        text, colspan, rowspan = _spans(raw.strip())
        attributes = ""
        if colspan > 1:
            attributes += f' colspan="{colspan}"'
        if rowspan > 1:
            attributes += f' rowspan="{rowspan}"'
            covered[column] = rowspan - 1
        cells.append(f"<{tag}{attributes}>{_cell_text(text)}</{tag}>")
        column += colspan
    return "".join(cells)


def _spans(cell):
    colspan = rowspan = 1
    while True:
        if cell.startswith("\\multicolumn"):
            arguments, rest = _arguments(cell[len("\\multicolumn") :], 3)
            if arguments is None:
                break
            colspan = _count(arguments[0])
            cell = arguments[2] + rest
        elif cell.startswith("\\multirow"):
            arguments, rest = _arguments(cell[len("\\multirow") :], 3)
            if arguments is None:
                break
            rowspan = _count(arguments[0])
            cell = arguments[2] + rest
        else:
            break
        cell = cell.strip()
    return cell, colspan, rowspan


def _count(text):
    digits = text.strip()
    return min(int(digits), SPAN_LIMIT) if digits.isdigit() and digits != "0" else 1


def _arguments(text, count):
    """`count` brace groups at the start of text, and what follows them."""
    arguments = []
    position = 0
    for _ in range(count):
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text) or text[position] != "{":
            return None, text
        end = _closing_brace(text, position)
        if end is None:
            return None, text
        arguments.append(text[position + 1 : end])
        position = end + 1
    return arguments, text[position:]


def _closing_brace(text, start):
    depth = 0
    for position in range(start, len(text)):
        character = text[position]
        if character == "{" and text[position - 1 : position] != "\\":
            depth += 1
        elif character == "}" and text[position - 1 : position] != "\\":
            depth -= 1
            if depth == 0:
                return position
    return None


def _skip_column_spec(body):
    arguments, rest = _arguments(body, 1)
    return rest if arguments is not None else body


def _cell_text(text):
    """Escaped cell text, with $...$ as spans for KaTeX."""
    parts = []
    position = 0
    for match in _MATH.finditer(text):
        parts.append(_plain(text[position : match.start()]))
        parts.append(f'<span class="math-inline">{html.escape(match.group(1))}</span>')
        position = match.end()
    parts.append(_plain(text[position:]))
    return "".join(parts)


def _plain(text):
    previous = None
    while previous != text:
        previous, text = text, _STYLE_COMMAND.sub(r"\1", text)
    return html.escape(_ESCAPED.sub(r"\1", text))
