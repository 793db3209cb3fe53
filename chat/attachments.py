"""Files attached to a question: their text, read faithfully, or a clear refusal.

Text, Markdown and LaTeX files are decoded as the polish workspace decodes
papers (byte-order mark, UTF-8, GB18030, then a detector), so a GBK file
reads as Chinese and not as mojibake. PDFs are read with pypdf, page by
page; a scan with no text layer is refused rather than sent as nothing,
because no OCR runs here. The text is not cut: the prompt's size check
(chat.prompt) decides whether the question still fits the model, and says
so with the numbers when it does not.
"""

import io
import logging
from pathlib import PurePath

from django.utils.translation import gettext_lazy as _
from pypdf import PdfReader
from pypdf.errors import PdfReadError

from academic.encoding import EncodingProblem, decode_bytes
from chat.models import Attachment

logger = logging.getLogger(__name__)

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_PDF_PAGES = 300
MAX_ATTACHMENTS_PER_QUESTION = 5
# Attachments uploaded but never sent are forgotten after this many.
MAX_PENDING_ATTACHMENTS = 20
KINDS = {
    ".txt": Attachment.Kind.TEXT,
    ".text": Attachment.Kind.TEXT,
    ".md": Attachment.Kind.MARKDOWN,
    ".markdown": Attachment.Kind.MARKDOWN,
    ".tex": Attachment.Kind.LATEX,
    ".pdf": Attachment.Kind.PDF,
}


class AttachmentProblem(ValueError):
    """A file that cannot be attached; `message` is for the user."""

    def __init__(self, message):
        super().__init__(str(message))
        self.message = message


def read_attachment(name, data):
    """(kind, text) of an uploaded file, or AttachmentProblem."""
    kind = KINDS.get(PurePath(name).suffix.lower())
    if kind is None:
        raise AttachmentProblem(
            _("Attach a text, Markdown, LaTeX or PDF file (.txt, .md, .tex, .pdf).")
        )
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise AttachmentProblem(
            _("The file is larger than %(limit)s MB.")
            % {"limit": MAX_ATTACHMENT_BYTES // (1024 * 1024)}
        )

    text = _pdf_text(data) if kind == Attachment.Kind.PDF else _file_text(data)
    if not text.strip():
        raise AttachmentProblem(_("The file holds no text."))
    return kind, text


def attach(user, name, data):
    """Store an uploaded file's text for the user's next question."""
    kind, text = read_attachment(name, data)
    attachment = Attachment.objects.create(
        user=user, name=name[:255], kind=kind, text=text, size_bytes=len(data)
    )
    _forget_old_pending(user)
    return attachment


def claim(user, attachment_ids, message):
    """Attach the user's pending uploads to the question they were sent with."""
    ids = [i for i in attachment_ids if isinstance(i, int)][
        :MAX_ATTACHMENTS_PER_QUESTION
    ]
    pending = Attachment.objects.filter(user=user, message__isnull=True, pk__in=ids)
    return pending.update(message=message)


def prompt_text(question_text, attachments):
    """What the model reads for a question: the typed text, then each file."""
    parts = [question_text]
    for attachment in attachments:
        parts.append(
            f'<attachment name="{attachment.name}">\n{attachment.text}\n</attachment>'
        )
    return "\n\n".join(parts)


def _file_text(data):
    try:
        return decode_bytes(data).text
    except EncodingProblem as problem:
        raise AttachmentProblem(problem.message) from problem


def _pdf_text(data):
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise AttachmentProblem(_("The PDF is protected by a password."))
        if len(reader.pages) > MAX_PDF_PAGES:
            raise AttachmentProblem(
                _("The PDF has more than %(limit)s pages.") % {"limit": MAX_PDF_PAGES}
            )
        pages = [page.extract_text() or "" for page in reader.pages]
    except AttachmentProblem:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        logger.info("unreadable PDF attachment: %r", exc)
        raise AttachmentProblem(_("The PDF is damaged or not a PDF.")) from exc

    if not any(page.strip() for page in pages):
        raise AttachmentProblem(
            _(
                "The PDF has no text layer (a scan?). Attach a PDF with text, "
                "or paste the text."
            )
        )
    return "\n\n".join(
        f"[page {number}]\n{text}" for number, text in enumerate(pages, 1)
    )


def _forget_old_pending(user):
    pending = Attachment.objects.filter(user=user, message__isnull=True)
    stale = pending.order_by("-created", "-id").values_list("pk", flat=True)[
        MAX_PENDING_ATTACHMENTS:
    ]
    Attachment.objects.filter(pk__in=list(stale)).delete()
