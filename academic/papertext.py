"""A paper's sections from its LaTeX source or from pasted text.

LaTeX is cut at \\section, \\subsection and \\subsubsection (and
\\chapter), outside comments, then each part is turned into plain text by
pylatexenc, which the workspace already uses to read LaTeX. A heading is
numbered as LaTeX's standard classes number it ("2.1 Data", "A Proofs"
after \\appendix), so the reader finds it as the compiled paper prints it.
Formulas are kept as their LaTeX source ($...$), which a model reads better
than any rendering of them. Files a source \\inputs are not in a single upload; the
paper page names them, so nobody takes the summary for the whole paper.

Pasted text (an arXiv abstract page, a paper copied from a viewer) is cut at
Markdown headings and at lines that look like headings (academic.pdftext).
Page numbers exist only for PDFs; references elsewhere name the section.
"""

import re

from pylatexenc.latex2text import LatexNodes2Text

from academic.pdftext import Block, Section, heading_of

LATEX_HEADING = re.compile(
    r"\\(?:(?P<command>chapter|section|subsection|subsubsection)(?P<star>\*?)"
    r"\s*(?:\[[^\]]*\])?\s*\{|appendix\b)"
)
HEADING_LEVELS = {"chapter": 0, "section": 1, "subsection": 2, "subsubsection": 3}
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
    headings = list(LATEX_HEADING.finditer(body))
    numbers = SectionNumbers(any(h["command"] == "chapter" for h in headings))
    for heading in headings:
        if heading["command"] is None:
            numbers.start_appendix()
            continue
        _add_latex_section(sections, title_text, body[start : heading.start()])
        end = _group_end(body, heading.end() - 1)
        number = numbers.next(heading["command"], starred=bool(heading["star"]))
        title_text = " ".join(
            part for part in (number, _to_text(body[heading.end() : end - 1])) if part
        )
        start = end
    _add_latex_section(sections, title_text, body[start:])
    return title, sections, inputs


class SectionNumbers:
    """Heading numbers as LaTeX's standard classes print them.

    With chapters (report, book) a section is "2.1" and a subsubsection has
    no number; without (article) a subsubsection is "1.2.3". After
    \\appendix the top level counts A, B, C. A class or package that numbers
    otherwise (\\setcounter, a changed secnumdepth or \\thesection) is not
    followed: its headings get the standard numbers.
    """

    def __init__(self, has_chapters):
        self.top = 0 if has_chapters else 1
        self.deepest = 2 if has_chapters else 3
        self.counts = [0] * len(HEADING_LEVELS)
        self.in_appendix = False

    def start_appendix(self):
        self.in_appendix = True
        self.counts = [0] * len(HEADING_LEVELS)

    def next(self, command, starred=False):
        """The number of the next heading; "" for one LaTeX leaves unnumbered."""
        level = HEADING_LEVELS[command]
        if starred or level < self.top or level > self.deepest:
            return ""
        self.counts[level] += 1
        for deeper in range(level + 1, len(self.counts)):
            self.counts[deeper] = 0
        parts = [str(count) for count in self.counts[self.top : level + 1]]
        if self.in_appendix and 1 <= self.counts[self.top] <= 26:
            parts[0] = chr(ord("A") + self.counts[self.top] - 1)
        return ".".join(parts)


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
