"""Checking and normalising uploaded pictures before an engine reads them."""

import io

import pytest
from django.utils import translation
from PIL import Image, ImageChops, ImageDraw

from academic.imaging import MAX_LONG_SIDE, ImageRefused, normalise


def encode(image, image_format="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def formula_like(size=(240, 60), ink=0, paper=255, mode="L"):
    """Dark strokes on a light page, like a screenshot of a formula."""
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    draw.text((10, size[1] // 3), "E = mc^2", fill=ink)
    draw.line((10, size[1] - 10, size[0] - 10, size[1] - 10), fill=ink, width=2)
    return image.convert(mode)


def decoded(result):
    return Image.open(io.BytesIO(result.png))


def refusal(data):
    with pytest.raises(ImageRefused) as caught:
        normalise(data)
    return caught.value


def test_it_passes_a_clean_image_with_its_pixels_unchanged(shared_dir):
    original = Image.open(shared_dir / "img2latex-eval/images/f01.png")

    result = normalise((shared_dir / "img2latex-eval/images/f01.png").read_bytes())

    assert result.steps == ()
    assert (result.width, result.height) == original.size
    image = decoded(result)
    assert image.format == "PNG"
    assert ImageChops.difference(image, original.convert(image.mode)).getbbox() is None


def test_it_refuses_what_is_not_an_image():
    error = refusal(b"%PDF-1.7 this is a paper, not a picture")

    assert error.code == "not_an_image"
    with translation.override("zh-hans"):
        assert "图片" in str(error.message)


def test_it_refuses_an_empty_file():
    assert refusal(b"").code == "empty"


def test_it_refuses_a_truncated_png():
    data = encode(formula_like())

    assert refusal(data[: len(data) // 2]).code == "broken"


def test_it_refuses_a_decompression_bomb_without_decoding_it():
    """A tiny file that claims 48 million pixels: refused from its header."""
    bomb = encode(Image.new("1", (8000, 6000)))
    assert len(bomb) < 100_000

    assert refusal(bomb).code == "too_many_pixels"


def test_it_refuses_an_animated_gif():
    frames = [formula_like(), formula_like(ink=120), formula_like(paper=200)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 3

    assert refusal(data).code == "animated"


def test_it_converts_a_cmyk_jpeg_to_rgb():
    data = encode(formula_like(mode="RGB").convert("CMYK"), "JPEG", quality=95)

    result = normalise(data)

    assert result.steps == ("colour_mode",)
    image = decoded(result)
    assert image.mode == "RGB"
    # The page stays light and the ink dark: no colour inversion on the way.
    assert image.getpixel((1, 1))[0] > 200
    assert image.convert("L").getextrema()[0] < 80


def test_it_converts_a_palette_image_to_rgb():
    result = normalise(encode(formula_like(mode="RGB").convert("P")))

    assert result.steps == ("colour_mode",)
    assert decoded(result).mode == "RGB"


def test_it_refuses_a_tiny_image_asking_for_a_larger_crop():
    error = refusal(encode(formula_like(size=(40, 8))))

    assert error.code == "too_small"
    with translation.override("en"):
        assert "larger crop" in str(error.message)


def test_it_scales_up_a_small_but_readable_image(shared_dir):
    data = (shared_dir / "img2latex-eval/images/variants/f16_tiny.png").read_bytes()

    result = normalise(data)

    assert result.steps == ("scaled_up",)
    assert result.height == 64


def test_it_inverts_a_dark_background(shared_dir):
    data = (shared_dir / "img2latex-eval/images/variants/f16_dark.png").read_bytes()

    result = normalise(data)

    assert result.steps == ("inverted",)
    image = decoded(result).convert("L")
    assert image.getpixel((0, 0)) > 200
    assert image.getextrema()[0] < 80


def test_it_composites_a_transparent_image_on_white(shared_dir):
    path = shared_dir / "img2latex-eval/images/variants/f16_transparent.png"

    result = normalise(path.read_bytes())

    assert result.steps == ("transparency",)
    image = decoded(result)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.convert("L").getextrema()[0] < 80


def test_it_keeps_light_ink_on_a_transparent_background_readable():
    """White strokes meant for a dark slide end up dark on white."""
    image = Image.new("RGBA", (240, 60), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((10, 20), "x^2", fill=(255, 255, 255, 255))

    result = normalise(encode(image))

    assert result.steps == ("transparency", "inverted")
    grey = decoded(result).convert("L")
    assert grey.getpixel((0, 0)) == 255
    assert grey.getextrema()[0] < 80


def test_it_refuses_a_blank_image():
    assert refusal(encode(Image.new("L", (200, 80), 255))).code == "blank"


def test_it_scales_down_a_very_large_image():
    result = normalise(encode(formula_like(size=(5000, 400))))

    assert result.steps == ("scaled_down",)
    assert (result.width, result.height) == (MAX_LONG_SIDE, 164)


def test_it_applies_the_exif_orientation():
    upright = formula_like(size=(200, 60), mode="RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to view
    data = encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif)

    result = normalise(data)

    assert result.steps == ("orientation",)
    assert (result.width, result.height) == (200, 60)


def test_it_drops_the_metadata_of_the_original():
    exif = Image.Exif()
    exif[0x010E] = "taken at home, 52.1N 4.3E"
    data = encode(formula_like(mode="RGB"), "JPEG", exif=exif)

    result = normalise(data)

    assert b"taken at home" not in result.png
    assert not decoded(result).getexif()
