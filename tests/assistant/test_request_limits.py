"""Request bodies over MAX_REQUEST_BYTES are refused before any form reads
them, with a message in the user's language."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from chat.models import Attachment
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher(client, settings):
    settings.MAX_REQUEST_BYTES = 1024 * 1024
    client.force_login(make_user())
    return client


def large_file(name="notes.txt", size=1200 * 1024):
    return SimpleUploadedFile(name, b"x" * size, "text/plain")


def test_it_refuses_a_scripts_upload_over_the_ceiling_as_json(researcher):
    response = researcher.post(
        reverse("chat-attach"),
        {"file": large_file()},
        HTTP_X_CSRFTOKEN="token",
    )

    assert response.status_code == 413
    assert (
        response.json()["error"]
        == "上传的内容超过 1 MB，比这里任何文件允许的大小都大。"
    )
    assert not Attachment.objects.exists()


def test_it_refuses_a_forms_upload_over_the_ceiling_with_a_page(researcher):
    researcher.cookies["django_language"] = "en"

    response = researcher.post(reverse("chat-import"), {"file": large_file("a.zip")})

    assert response.status_code == 413
    assert "The upload is too large" in response.text
    assert "data-too-large" in response.text


def test_it_lets_an_upload_under_the_ceiling_through(researcher):
    response = researcher.post(
        reverse("chat-attach"),
        {"file": large_file(size=10 * 1024)},
        HTTP_X_CSRFTOKEN="token",
    )

    assert response.status_code == 200
    assert Attachment.objects.count() == 1
