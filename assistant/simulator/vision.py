"""Chat requests that carry images, as a vision model's server answers them.

A request's `image_url` parts must be data URIs holding a PNG that decodes
(checked here with the standard library: chunk checksums, a complete zlib
stream of the announced size), because the app promises to send nothing
else: never an http URL, which would leak the image to whoever serves it.
A bad part is refused with 400, as real servers refuse an image they cannot
read, and so is an image sent to a model that reads none.

The simulator does not read the picture. It answers with plausible source
for the output the prompt asks for (LaTeX formula, tabular, pipe table or
HTML table), in a code fence as real models often reply, so that the app's
whole path (upload, request, fence stripping, preview) can be exercised.
"""

import base64
import binascii
import re
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"data:image/png;base64,(?P<data>[A-Za-z0-9+/=\s]+)", re.DOTALL)
# Bits per pixel for each PNG colour type, per bit of sample depth.
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}

FORMULA_REPLY = "```latex\n\\frac{a+b}{2} \\geq \\sqrt{ab}\n```"
TABULAR_REPLY = (
    "```latex\n"
    "\\begin{tabular}{lrr}\n"
    "\\toprule\n"
    "Model & Params & Score \\\\\n"
    "\\midrule\n"
    "Base & 7B & 61.2 \\\\\n"
    "Large & 70B & 74.8 \\\\\n"
    "\\multicolumn{2}{l}{Mean} & 68.0 \\\\\n"
    "\\bottomrule\n"
    "\\end{tabular}\n"
    "```"
)
PIPE_TABLE_REPLY = (
    "```markdown\n"
    "| Model | Params | Score |\n"
    "| --- | ---: | ---: |\n"
    "| Base | 7B | 61.2 |\n"
    "| Large | 70B | 74.8 |\n"
    "```"
)
HTML_TABLE_REPLY = (
    "```html\n"
    "<table>\n"
    "<thead><tr><th>Model</th><th>Params</th><th>Score</th></tr></thead>\n"
    "<tbody>\n"
    "<tr><td>Base</td><td>7B</td><td>61.2</td></tr>\n"
    "<tr><td>Large</td><td>70B</td><td>74.8</td></tr>\n"
    '<tr><td colspan="2">Mean</td><td>68.0</td></tr>\n'
    "</tbody>\n"
    "</table>\n"
    "```"
)


class ImageError(ValueError):
    """An image part the simulator, like a real server, cannot use."""


def reply_for(messages, reads_images):
    """The answer to a request with images, or None for one without.

    Raises ImageError for images sent to a model that reads none, and for
    any image part that is not a data URI of a decodable PNG.
    """
    parts = image_parts(messages)
    if not parts:
        return None
    if not reads_images:
        raise ImageError("this model does not accept images")

    for part in parts:
        check_image_part(part)
    return answer(_last_user_prompt(messages))


def _last_user_prompt(messages):
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        return "\n".join(text for text in texts if isinstance(text, str))
    return ""


def image_parts(messages):
    """The image_url parts of all messages, in order."""
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts.extend(
                part
                for part in content
                if isinstance(part, dict) and part.get("type") == "image_url"
            )
    return parts


def check_image_part(part):
    """Raise ImageError unless the part holds a data URI of a decodable PNG."""
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str):
        raise ImageError("image_url.url must be a string")

    match = DATA_URI.fullmatch(url)
    if match is None:
        raise ImageError("image_url.url must be a data:image/png;base64 URI")
    try:
        data = base64.b64decode(match.group("data"), validate=False)
    except (binascii.Error, ValueError):
        raise ImageError("the image's base64 does not decode") from None
    check_png(data)


def check_png(data):
    """Raise ImageError unless data is a complete, consistent PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise ImageError("the image is not a PNG")

    chunks = list(_chunks(data))
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ImageError("the PNG lacks its IHDR or IEND chunk")

    width, height, depth, colour, _, _, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    if colour not in CHANNELS or interlace:
        raise ImageError("the PNG's colour type or interlacing is not supported")
    try:
        pixels = zlib.decompress(
            b"".join(body for kind, body in chunks if kind == b"IDAT")
        )
    except zlib.error:
        raise ImageError("the PNG's image data does not decompress") from None

    row_bytes = (width * CHANNELS[colour] * depth + 7) // 8
    if len(pixels) != height * (row_bytes + 1):
        raise ImageError("the PNG's image data is shorter or longer than its size")


def _chunks(data):
    position = len(PNG_SIGNATURE)
    while position < len(data):
        if position + 12 > len(data):
            raise ImageError("the PNG is truncated")
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 12 + length
        if end > len(data):
            raise ImageError("the PNG is truncated")
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : end - 4]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind + body) != crc:
            raise ImageError("a PNG chunk fails its checksum")
        yield kind, body
        position = end


def answer(prompt):
    """The reply to an image request, chosen by what the prompt asks for."""
    lowered = prompt.lower()
    if "tabular" in lowered:
        return TABULAR_REPLY
    if "pipe table" in lowered:
        return PIPE_TABLE_REPLY
    if "<table>" in lowered:
        return HTML_TABLE_REPLY
    return FORMULA_REPLY
