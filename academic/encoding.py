"""Reading uploaded text files in whatever encoding they came in, and writing
them back the same way.

Researchers' files arrive as UTF-8, UTF-8 with a byte-order mark, GBK from
older Chinese editors, and now and then something else. A file is read by its
byte-order mark, then as strict UTF-8, then as strict GB18030 (a superset of
GBK), and only then by guessing with charset-normalizer. Every candidate must
also encode back to the very same bytes, so that an untouched file is written
back byte for byte.
"""

from dataclasses import dataclass

from charset_normalizer import from_bytes
from django.utils.translation import gettext_lazy as _

# UTF-32 marks come first: the UTF-32-LE mark begins with the UTF-16-LE one.
BYTE_ORDER_MARKS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)
BOM_BY_ENCODING = {encoding: bom for bom, encoding in BYTE_ORDER_MARKS}

# Newline styles; MIXED_NEWLINES means the text keeps its line endings as read.
LF = "\n"
CRLF = "\r\n"
CR = "\r"
MIXED_NEWLINES = None


class EncodingProblem(ValueError):
    """A file that cannot be read, or text that cannot be written, faithfully.

    `message` is translatable and meant for the user; `details` is not.
    """

    def __init__(self, message, details=""):
        super().__init__(str(details or message))
        self.message = message
        self.details = details


@dataclass(frozen=True)
class DecodedText:
    """A file's text and what is needed to write it back unchanged.

    `text` uses "\\n" line endings unless `newline` is MIXED_NEWLINES, in which
    case it keeps the file's own mixture untouched.
    """

    text: str
    encoding: str
    bom: bool
    newline: str | None


def decode_bytes(data):
    """The text of `data`, its encoding, byte-order mark and newline style."""
    encoding, bom, raw_text = _decode_raw(data)
    newline = detect_newline(raw_text)

    if newline in (CRLF, CR):
        text = raw_text.replace(newline, LF)
    else:
        text = raw_text
    return DecodedText(text=text, encoding=encoding, bom=bom, newline=newline)


def encode_text(text, source, as_utf8=False):
    """`text` as bytes in the encoding, mark and newline style of `source`.

    With `as_utf8`, the text is written as UTF-8 without a byte-order mark but
    keeps its line endings.
    """
    if source.newline in (CRLF, CR):
        # Text from a model may mix "\r\n" back in; fold everything to "\n"
        # first so that no line ends up with a doubled "\r".
        text = text.replace(CRLF, LF).replace(CR, LF).replace(LF, source.newline)

    if as_utf8:
        return text.encode("utf-8")

    try:
        body = text.encode(source.encoding)
    except UnicodeEncodeError as error:
        raise EncodingProblem(
            _(
                "The result contains characters that the file's encoding cannot "
                "represent. Download it as UTF-8 instead."
            ),
            details=f"{source.encoding}: {error.object[error.start : error.end]!r}",
        ) from error

    if source.bom:
        return BOM_BY_ENCODING[source.encoding] + body
    return body


def detect_newline(text):
    """The one line-ending style `text` uses, LF when it has no line break,
    or MIXED_NEWLINES when it uses more than one."""
    crlf = text.count(CRLF)
    lone_cr = text.count(CR) - crlf
    lone_lf = text.count(LF) - crlf

    used = [
        style for style, count in ((CRLF, crlf), (CR, lone_cr), (LF, lone_lf)) if count
    ]
    if not used:
        return LF
    if len(used) == 1:
        return used[0]
    return MIXED_NEWLINES


def _decode_raw(data):
    for bom, encoding in BYTE_ORDER_MARKS:
        if data.startswith(bom):
            text = _decode_exactly(data[len(bom) :], encoding)
            if text is not None:
                return encoding, True, text

    for encoding in ("utf-8", "gb18030"):
        text = _decode_exactly(data, encoding)
        if text is not None:
            return encoding, False, text

    guess = from_bytes(data).best()
    if guess is not None:
        text = _decode_exactly(data, guess.encoding)
        if text is not None:
            return guess.encoding, False, text

    raise EncodingProblem(
        _(
            "The file's character encoding could not be recognised. Save it as "
            "UTF-8 and upload it again."
        ),
        details=f"{len(data)} bytes, starting {data[:16]!r}",
    )


def _decode_exactly(data, encoding):
    """`data` decoded strictly, or None unless it encodes back to the same bytes."""
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None

    if text.encode(encoding) != data:
        return None
    return text
