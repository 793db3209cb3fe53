"""The converter's page and JSON endpoints, as a signed-in researcher uses them."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image, ImageDraw

from academic.models import Conversion
from academic.tasks import convert_image
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def formula_png():
    image = Image.new("L", (240, 60), 255)
    ImageDraw.Draw(image).text((10, 20), "a + b = c", fill=0)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def upload(client, data=None, **fields):
    form = {"kind": "formula", "target": "latex", "wrapper": "none", **fields}
    form["image"] = SimpleUploadedFile("shot.png", data or formula_png(), "image/png")
    return client.post(reverse("academic-convert-create"), form)


@pytest.fixture
def researcher(client):
    user = make_user()
    client.force_login(user)
    return user


def test_it_requires_sign_in(client):
    response = client.get(reverse("academic-convert"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_shows_the_page_with_the_history(client, researcher, model_api):
    Conversion.objects.create(
        owner=researcher,
        kind="table",
        target="html",
        image=formula_png(),
        image_width=240,
        image_height=60,
        model="qwen2.5-vl-sim",
        status="done",
        source="<table><tr><td onmouseover=alert(1)>1</td></tr></table>",
    )

    response = client.get(reverse("academic-convert"))

    assert response.status_code == 200
    history = response.context["page_data"]["history"]
    assert [item["kind"] for item in history] == ["table"]
    assert (
        history[0]["previewHtml"] == "<table><tbody><tr><td>1</td></tr></tbody></table>"
    )
    assert response.context["page_data"]["noVisionModel"] == ""
    assert b"data-dropzone" in response.content


def test_it_converts_an_upload_and_reports_the_result(
    client, researcher, model_api, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = upload(client, wrapper="display")

    assert response.status_code == 201
    conversion = Conversion.objects.get(owner=researcher)
    assert response.json()["status"] == "queued"
    assert conversion.model == "qwen2.5-vl-sim"
    assert len(callbacks) == 1

    convert_image(conversion.pk)
    status = client.get(reverse("academic-convert-status", args=[conversion.pk]))

    data = status.json()
    assert data["status"] == "done"
    assert data["isOpen"] is False
    assert data["source"] == r"\frac{a+b}{2} \geq \sqrt{ab}"
    assert data["text"] == "\\[\n\\frac{a+b}{2} \\geq \\sqrt{ab}\n\\]"


def test_it_refuses_a_bad_image_with_a_translated_message(
    client, researcher, model_api
):
    response = upload(client, data=b"GIF89a not really")

    assert response.status_code == 400
    assert "不是转换器能读取的图片" in response.json()["error"]
    assert not Conversion.objects.exists()


def test_it_refuses_html_output_for_a_formula(client, researcher, model_api):
    response = upload(client, target="html")

    assert response.status_code == 400
    assert "MathML" in response.json()["error"]


def test_it_says_so_when_no_model_reads_images(client, researcher, model_api):
    from assistant.models import ModelProfile

    ModelProfile.ensure("qwen2.5-vl-sim")
    ModelProfile.objects.update(supports_vision=False)

    page = client.get(reverse("academic-convert"))
    response = upload(client)

    assert "视觉模型" in page.context["page_data"]["noVisionModel"]
    assert response.status_code == 503
    assert "视觉模型" in response.json()["error"]


def test_it_hides_other_users_conversions(client, researcher, model_api):
    conversion = Conversion.objects.create(
        owner=make_user("colleague"),
        kind="formula",
        target="latex",
        image=formula_png(),
        image_width=240,
        image_height=60,
        model="qwen2.5-vl-sim",
    )

    status = client.get(reverse("academic-convert-status", args=[conversion.pk]))
    image = client.get(reverse("academic-convert-image", args=[conversion.pk]))
    page = client.get(reverse("academic-convert"))

    assert status.status_code == 404
    assert image.status_code == 404
    assert page.context["page_data"]["history"] == []


def test_it_serves_the_owner_the_normalised_png(client, researcher, model_api):
    conversion = Conversion.objects.create(
        owner=researcher,
        kind="formula",
        target="latex",
        image=formula_png(),
        image_width=240,
        image_height=60,
        model="qwen2.5-vl-sim",
    )

    response = client.get(reverse("academic-convert-image", args=[conversion.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response.content == formula_png()


def test_it_refuses_get_on_create(client, researcher):
    assert client.get(reverse("academic-convert-create")).status_code == 405


def test_it_refuses_an_oversized_upload_before_reading_it(
    client, researcher, model_api
):
    response = client.post(
        reverse("academic-convert-create"),
        data=b"x" * 100,
        content_type="multipart/form-data; boundary=x",
        # Over the converter's 10 MB, under the whole site's ceiling
        # (MAX_REQUEST_BYTES), which has a message of its own.
        CONTENT_LENGTH=str(20 * 1024 * 1024),
    )

    assert response.status_code == 413
    assert "10 MB" in response.json()["error"]


def test_it_converts_a_stored_picture_again_with_new_options(
    client, researcher, model_api, django_capture_on_commit_callbacks
):
    earlier = Conversion.objects.create(
        owner=researcher,
        kind="formula",
        target="latex",
        image=formula_png(),
        image_width=240,
        image_height=60,
        adjustments=["scaled_up"],
        model="qwen2.5-vl-sim",
        status="error",
        error_code="no_formula",
    )
    url = reverse("academic-convert-again", args=[earlier.pk])

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(url, {"kind": "table", "target": "html"})

    assert response.status_code == 201
    again = Conversion.objects.get(pk=response.json()["id"])
    assert (again.kind, again.target, again.wrapper) == ("table", "html", "none")
    assert bytes(again.image) == formula_png()
    assert again.adjustments == ["scaled_up"]
    assert again.status == "queued"
    assert len(callbacks) == 1


def test_it_does_not_convert_a_colleagues_picture_again(client, researcher, model_api):
    theirs = Conversion.objects.create(
        owner=make_user("colleague"),
        kind="formula",
        target="latex",
        image=formula_png(),
        image_width=240,
        image_height=60,
        model="qwen2.5-vl-sim",
    )

    response = client.post(
        reverse("academic-convert-again", args=[theirs.pk]),
        {"kind": "formula", "target": "latex"},
    )

    assert response.status_code == 404
    assert Conversion.objects.count() == 1
