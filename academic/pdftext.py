"""A paper's text, page by page and section by section, for reading.

PDFs are read with pypdf rather than pdfminer.six: pypdf is already what
chat attachments use, it keeps each page's text apart (page numbers are what
a reader checks a statement against), and its plain extraction keeps the
reading order of one- and two-column papers well enough for summarising.
pdfminer's layout analysis would place text more exactly, but would add a
second PDF library for little gain on the summaries.

Formulas come out as pypdf writes them: letters, digits and whatever symbols
the font maps to Unicode, without fraction bars, sub- or superscript
positions; the paper page says so. A scan with no text layer is refused,
because no OCR runs here.

Headings are found by their look, since a PDF does not mark them: a line
that is a numbered title ("3.2 Results"), or one of the usual names of a
paper's parts ("Abstract", "References", "参考文献"), standing alone.
"""

import io
import logging
import re
from dataclasses import dataclass, field

from django.utils.translation import gettext_lazy as _
from pypdf import PdfReader
from pypdf.errors import PdfReadError

logger = logging.getLogger(__name__)

MAX_PDF_BYTES = 20 * 1024 * 1024
MAX_PDF_PAGES = 500
MAX_HEADING_CHARS = 80
MAX_HEADING_WORDS = 10

NUMBERED_HEADING = re.compile(
    r"^(?P<number>\d{1,2}(?:\.\d{1,2}){0,2}\.?|[IVX]{1,4}\.)\s+"
    r"(?P<title>[A-Z\u4e00-\u9fff][^\n]*)$"
)
NAMED_HEADING = re.compile(
    r"^(?:abstract|introduction|related work|background|methods?|"
    r"materials and methods|experiments?|results|discussion|conclusions?|"
    r"limitations|acknowledge?ments|references|bibliography|appendix|"
    r"摘\s*要|引\s*言|绪\s*论|结\s*论|参考文献|致\s*谢)$",
    re.IGNORECASE,
)
CHAPTER_HEADING = re.compile(r"^第[一二三四五六七八九十\d]+[章节]\s*\S.*$")
WORD = re.compile(r"[^\W\d_]{3,}")


class ExtractionProblem(ValueError):
    """A file whose text cannot be read; `message` is for the user."""

    def __init__(self, message):
        super().__init__(str(message))
        self.message = message


@dataclass
class Block:
    """Text of one section on one page; `page` is None outside PDFs."""

    page: int | None
    text: str


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def text(self):
        return "\n".join(block.text for block in self.blocks)

    @property
    def pages(self):
        return [block.page for block in self.blocks if block.page is not None]


def pdf_sections(data):
    """(title, [Section]) of a PDF's bytes, or ExtractionProblem."""
    if len(data) > MAX_PDF_BYTES:
        raise ExtractionProblem(
            _("The file is larger than %(limit)s MB.")
            % {"limit": MAX_PDF_BYTES // (1024 * 1024)}
        )

    reader, pages = _read_pages(data)
    if not any(page.strip() for page in pages):
        raise ExtractionProblem(
            _(
                "This PDF has no text layer (it looks like a scan), and no "
                "text recognition runs here. Upload a PDF with text, its LaTeX "
                "source, or paste the text."
            )
        )

    sections = split_pages(pages)
    return _pdf_title(reader, sections), sections


def _read_pages(data):
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionProblem(_("The PDF is protected by a password."))
        if len(reader.pages) > MAX_PDF_PAGES:
            raise ExtractionProblem(
                _("The PDF has more than %(limit)s pages.") % {"limit": MAX_PDF_PAGES}
            )
        pages = [page.extract_text() or "" for page in reader.pages]
    except ExtractionProblem:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        logger.info("unreadable PDF for reading: %r", exc)
        raise ExtractionProblem(_("The PDF is damaged or not a PDF.")) from exc
    return reader, pages


def split_pages(pages):
    """[Section] of the pages' texts (page 1 first), cut at heading lines.

    Text before the first heading (title, authors) is a section without a
    title. Every line lands in exactly one block: nothing is dropped.
    """
    sections = [Section(title="")]
    for number, page_text in enumerate(pages, 1):
        lines = []
        for line in page_text.splitlines():
            heading = heading_of(line)
            if heading is None:
                lines.append(line)
                continue
            _close_block(sections[-1], number, lines)
            lines = []
            sections.append(Section(title=heading))
        _close_block(sections[-1], number, lines)
    return [section for section in sections if section.title or section.blocks]


def _close_block(section, page, lines):
    text = "\n".join(lines).strip()
    if text:
        section.blocks.append(Block(page=page, text=text))


def heading_of(line):
    """The heading a line is, tidied, or None for an ordinary line."""
    line = " ".join(line.split())
    if not line or len(line) > MAX_HEADING_CHARS:
        return None
    if NAMED_HEADING.match(line) or CHAPTER_HEADING.match(line):
        return line

    match = NUMBERED_HEADING.match(line)
    if match is None:
        return None
    title = match["title"]
    # A sentence or a table row that happens to start with a number is not
    # a heading: headings are short, end without punctuation and have words.
    if len(title.split()) > MAX_HEADING_WORDS or title[-1] in ".,;:":
        return None
    if not WORD.search(title) and not re.search(r"[\u4e00-\u9fff]", title):
        return None
    return line


def _pdf_title(reader, sections):
    metadata_title = ""
    try:
        metadata_title = (reader.metadata or {}).get("/Title") or ""
    except (PdfReadError, ValueError, KeyError, TypeError):
        pass
    if str(metadata_title).strip():
        return str(metadata_title).strip()[:200]

    first = sections[0] if sections else None
    if first and first.blocks:
        return first.blocks[0].text.splitlines()[0][:200]
    return ""
