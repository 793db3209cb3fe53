"""Decode an uploaded picture with Pillow and make it fit for a reading engine.

Every image is checked and normalised here before any engine sees it, and
each step runs only when its trigger is met: preprocessing helps on odd
images (dark, transparent, tiny) and can hurt on clean ones, so a clean
image passes with its pixels unchanged. The result is always lossless PNG,
re-encoded so that no metadata of the original (EXIF, GPS, comments) travels
on to the model service.

Refusals raise ImageRefused, whose message is translated and tells the user
what to do instead. Animated images are refused rather than cut to their
first frame: the first frame is often not the one the user meant, and a
silent guess would hand back the source of the wrong formula.
"""

import io
import logging
import warnings
import zlib
from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _
from PIL import Image, ImageOps, ImageStat, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Pillow refuses to open an image above twice this many pixels and warns
# above it; the warning is turned into a refusal too (see _open). 40 million
# is a 7,000 x 5,700 scan, far more than a screenshot of a formula needs,
# and decoding it takes about 120 MB.
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Only these decoders run: others (EPS, for one) start external programs or
# parse formats no screenshot comes in.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")

# Larger images are scaled down so their long side is this: vision models
# tile an image into patches, and more pixels only cost time and tokens.
MAX_LONG_SIDE = 2048
# Below this on the short side nothing can be read, even scaled up.
MIN_SHORT_SIDE = 10
MIN_PIXELS = 400
# Small but readable images are scaled up to this short side, at most
# MAX_UPSCALE times: vision models read patches of 14 to 28 pixels, which a
# line of 16-pixel text barely fills.
SMALL_SHORT_SIDE = 32
UPSCALED_SHORT_SIDE = 64
MAX_UPSCALE = 4

# The border of a screenshot is its background; darker than this (0-255)
# means light text on a dark background.
DARK_BACKGROUND = 96
# Opaque pixels of a transparent image lighter than this on average are
# light ink meant for a dark page.
LIGHT_INK = 160
EXIF_ORIENTATION = 0x0112

MESSAGES = {
    "empty": _("The file is empty. Paste, drop or choose an image."),
    "too_large_file": _(
        "The file is larger than 10 MB. Crop the image to the formula or table "
        "and try again."
    ),
    "not_an_image": _(
        "This file is not an image the converter can read. Use a PNG, JPEG, "
        "GIF, WebP, BMP or TIFF picture, such as a screenshot."
    ),
    "broken": _(
        "The image is damaged or incomplete (perhaps cut off while saving or "
        "uploading). Take the screenshot again or save the picture anew."
    ),
    "too_many_pixels": _(
        "The image has too many pixels to process safely (more than 40 "
        "million). Crop it to the formula or table, or scale it down."
    ),
    "animated": _(
        "This is an animated image. Save the frame that shows the formula or "
        "table as a still picture (a screenshot works) and try again."
    ),
    "too_small": _(
        "The image is too small to read. Take a larger crop, or zoom in before "
        "taking the screenshot."
    ),
    "blank": _("The image is blank: it holds no formula or table to read."),
}


class ImageRefused(Exception):
    """An upload that cannot be converted; `message` says why, translated."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code
        self.message = MESSAGES[code]


@dataclass(frozen=True)
class NormalisedImage:
    png: bytes
    width: int
    height: int
    # The normalising steps that ran, in order, e.g. ("inverted",).
    steps: tuple


def normalise(data):
    """Check the uploaded bytes and return them as a NormalisedImage.

    Raises ImageRefused for anything that cannot or should not be read.
    """
    if not data:
        raise ImageRefused("empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageRefused("too_large_file")

    image = _open(data)
    steps = []

    image = _first_and_only_frame(image)
    image = _apply_orientation(image, steps)
    image = _to_plain_mode(image, steps)
    _check_size(image)
    image = _invert_dark_background(image, steps)
    image = _resize(image, steps)

    return NormalisedImage(_png_bytes(image), image.width, image.height, tuple(steps))


def _open(data):
    with warnings.catch_warnings():
        # Between MAX_PIXELS and twice that Pillow only warns.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRefused("too_many_pixels") from None
        except UnidentifiedImageError:
            raise ImageRefused("not_an_image") from None
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
            # Truncated data, a bad checksum, a corrupt header: Pillow raises
            # any of these depending on the format and where the damage is.
            logger.debug("image refused as broken: %r", exc)
            raise ImageRefused("broken") from None
    return image


def _first_and_only_frame(image):
    if getattr(image, "n_frames", 1) > 1:
        raise ImageRefused("animated")
    return image


def _apply_orientation(image, steps):
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation in (None, 1):
        return image

    steps.append("orientation")
    return ImageOps.exif_transpose(image)


def _to_plain_mode(image, steps):
    """Grey or RGB without transparency; grey and RGB images stay as they are."""
    if image.mode in ("L", "RGB"):
        return image

    if _has_transparency(image):
        steps.append("transparency")
        return _composite(image.convert("RGBA"))

    steps.append("colour_mode")
    if image.mode in ("1", "I", "I;16", "I;16B", "I;16L", "F"):
        return _to_grey(image)
    return image.convert("RGB")


def _has_transparency(image):
    if image.mode in ("RGBA", "LA", "PA"):
        return image.getchannel("A").getextrema()[0] < 255
    return "transparency" in image.info


def _composite(rgba):
    """Put the image on white, or on black when its ink is light.

    Light ink on a transparent background was drawn for a dark page; on
    white it would vanish, so it goes on black and the dark-background step
    then inverts it like any other dark screenshot.
    """
    alpha = rgba.getchannel("A")
    ink = ImageStat.Stat(rgba.convert("L"), mask=alpha.point(lambda a: 255 * (a > 0)))
    light_ink = bool(ink.count[0]) and ink.mean[0] > LIGHT_INK
    background = (0, 0, 0) if light_ink else (255, 255, 255)

    page = Image.new("RGB", rgba.size, background)
    page.paste(rgba, mask=alpha)
    return page


def _to_grey(image):
    if image.mode == "1":
        return image.convert("L")
    # 16-bit and float images: stretch their own range onto 0-255.
    image = image.convert("F")
    low, high = image.getextrema()
    scale = 255 / (high - low) if high > low else 0
    return image.point(lambda value: (value - low) * scale).convert("L")


def _check_size(image):
    width, height = image.size
    if min(width, height) < MIN_SHORT_SIDE or width * height < MIN_PIXELS:
        raise ImageRefused("too_small")

    low, high = image.convert("L").getextrema()
    if low == high:
        raise ImageRefused("blank")


def _invert_dark_background(image, steps):
    if _border_brightness(image) >= DARK_BACKGROUND:
        return image

    steps.append("inverted")
    return ImageOps.invert(image)


def _border_brightness(image):
    """Mean grey level of the outermost pixels, which are the background."""
    grey = image.convert("L")
    width, height = grey.size
    strips = [
        grey.crop((0, 0, width, 1)),
        grey.crop((0, height - 1, width, height)),
        grey.crop((0, 0, 1, height)),
        grey.crop((width - 1, 0, width, height)),
    ]
    total = sum(ImageStat.Stat(strip).sum[0] for strip in strips)
    count = sum(strip.width * strip.height for strip in strips)
    return total / count


def _resize(image, steps):
    width, height = image.size
    if max(width, height) > MAX_LONG_SIDE:
        steps.append("scaled_down")
        factor = MAX_LONG_SIDE / max(width, height)
    elif min(width, height) < SMALL_SHORT_SIDE:
        steps.append("scaled_up")
        factor = min(UPSCALED_SHORT_SIDE / min(width, height), MAX_UPSCALE)
    else:
        return image

    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
