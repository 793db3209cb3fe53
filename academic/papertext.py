"""A paper's sections from its LaTeX source or from pasted text.

LaTeX is cut at \\section, \\subsection and \\subsubsection (and
\\chapter), outside comments, then each part is turned into plain text by
pylatexenc, which the workspace already uses to read LaTeX. Formulas are
kept as their LaTeX source ($...$), which a model reads better than any
rendering of them. Files a source \\inputs are not in a single upload; the
paper page names them, so nobody takes the summary for the whole paper.

Pasted text (an arXiv abstract page, a paper copied from a viewer) is cut at
Markdown headings and at lines that look like headings (academic.pdftext).
Page numbers exist only for PDFs; references elsewhere name the section.
"""

import re

from pylatexenc.latex2text import LatexNodes2Text

from academic.pdftext import Block, Section, heading_of

LATEX_HEADING = re.compile(
    r"\\(?:chapter|section|subsection|subsubsection)\*?\s*(?:\[[^\]]*\])?\s*\{"
)
LATEX_COMMENT = re.compile(r"(?<!\\)%[^\n]*")
LATEX_TITLE = re.compile(r"\\title\s*(?:\[[^\]]*\])?\s*\{")
# Title-page commands that pylatexenc would turn into "[NO \title GIVEN]".
TITLE_PAGE = re.compile(r"\\(?:maketitle|tableofcontents)\b")
LATEX_INPUT = re.compile(r"\\(?:input|include)\s*\{([^}]+)\}")
DOCUMENT_BODY = re.compile(
    r"\\begin\{document\}(?P<body>.*?)(?:\\end\{document\}|$)", re.S
)
MARKDOWN_HEADING = re.compile(r"^#{1,4}\s+(?P<title>.+?)\s*#*\s*$")


def latex_sections(source):
    """(title, [Section], [names of \\input files]) of a LaTeX source."""
    source = TITLE_PAGE.sub("", LATEX_COMMENT.sub("", source))
    inputs = LATEX_INPUT.findall(source)
    title = _latex_title(source)
    match = DOCUMENT_BODY.search(source)
    body = match["body"] if match else source

    sections = []
    title_text, start = "", 0
    for heading in LATEX_HEADING.finditer(body):
        _add_latex_section(sections, title_text, body[start : heading.start()])
        end = _group_end(body, heading.end() - 1)
        title_text = _to_text(body[heading.end() : end - 1])
        start = end
    _add_latex_section(sections, title_text, body[start:])
    return title, sections, inputs


def _add_latex_section(sections, title, source):
    text = _to_text(source).strip()
    if title or text:
        blocks = [Block(page=None, text=text)] if text else []
        sections.append(Section(title=" ".join(title.split()), blocks=blocks))


def _latex_title(source):
    match = LATEX_TITLE.search(source)
    if match is None:
        return ""
    end = _group_end(source, match.end() - 1)
    return " ".join(_to_text(source[match.end() : end - 1]).split())[:200]


def _group_end(text, open_brace):
    """The index just past the brace group opening at `open_brace`."""
    depth = 0
    position = open_brace
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return position + 1
        position += 1
    return len(text)


def _to_text(source):
    converter = LatexNodes2Text(math_mode="verbatim", strict_latex_spaces=True)
    try:
        text = converter.latex_to_text(source, tolerant_parsing=True)
    except Exception:  # noqa: BLE001 - pylatexenc raises odd errors on odd input
        # The source itself still reads, and nothing is lost.
        text = source
    return re.sub(r"\n{3,}", "\n\n", text)


def text_sections(text):
    """(title, [Section]) of pasted text, cut at heading-like lines."""
    sections = [Section(title="")]
    lines = []
    for line in text.splitlines():
        markdown = MARKDOWN_HEADING.match(line.strip())
        heading = markdown["title"] if markdown else heading_of(line)
        if heading is None:
            lines.append(line)
            continue
        _close(sections[-1], lines)
        lines = []
        sections.append(Section(title=heading))
    _close(sections[-1], lines)

    sections = [section for section in sections if section.title or section.blocks]
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first_line[:200], sections


def _close(section, lines):
    text = "\n".join(lines).strip()
    if text:
        section.blocks.append(Block(page=None, text=text))
