"""One entry point for masking a document of any supported kind."""

from academic.latex import mask_latex
from academic.markdown_mask import mask_markdown
from academic.placeholders import mask_spans

LATEX = "latex"
MARKDOWN = "markdown"
PLAIN = "plain"


def mask_plain(source):
    """Plain text hides nothing but stray placeholder brackets."""
    return mask_spans(source, [])


MASKERS = {LATEX: mask_latex, MARKDOWN: mask_markdown, PLAIN: mask_plain}


def mask_document(source, kind):
    """A MaskedText of `source`, read as `kind` (LATEX, MARKDOWN or PLAIN)."""
    return MASKERS[kind](source)
