"""Pictures with too many pixels are refused at the converter's door, from
their header, with the message in the user's language."""

import io

import pytest
from PIL import Image

from academic.models import Conversion
from tests.academic.test_convert_views import upload
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def png(width, height):
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def researcher(client):
    client.force_login(make_user())
    return client


@pytest.mark.parametrize(
    "width, height",
    [
        # Over twice the limit: Pillow's DecompressionBombError.
        (10_000, 9_000),
        # Just over it: Pillow only warns, which the app treats as refusal.
        (7_000, 6_000),
    ],
)
def test_it_refuses_a_decompression_bomb_with_a_clear_message(
    researcher, model_api, width, height
):
    bomb = png(width, height)
    assert len(bomb) < 200_000

    response = upload(researcher, bomb)

    assert response.status_code == 400
    assert "像素过多" in response.json()["error"]
    assert not Conversion.objects.exists()


def test_it_explains_the_pixel_limit_in_english(researcher, model_api):
    researcher.cookies["django_language"] = "en"

    response = upload(researcher, png(10_000, 9_000))

    assert "too many pixels" in response.json()["error"]
