"""The app's middlewares run in the mode of the chain they are in.

Django logs, with DEBUG on, every middleware it has to adapt to the other
mode; under ASGI each such adaptation is a thread the request holds.
"""

import logging

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient
from django.urls import reverse

pytestmark = pytest.mark.django_db

STATIC_FILES = "assistant.static_files.StaticFilesMiddleware"


def adapted_middlewares(settings, caplog):
    """The middlewares Django adapted to build the ASGI chain."""
    settings.DEBUG = True
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler().load_middleware(is_async=True)
    return {
        record.getMessage().removesuffix(".").rsplit(" ", 1)[-1]
        for record in caplog.records
        if "handler adapted for middleware" in record.getMessage()
    }


def test_no_middleware_of_the_chain_needs_adapting(settings, caplog):
    assert adapted_middlewares(settings, caplog) == set()


def test_whitenoise_s_own_middleware_would_need_adapting(settings, caplog):
    """The control: the check sees a sync-only middleware."""
    settings.MIDDLEWARE = [
        "whitenoise.middleware.WhiteNoiseMiddleware" if name == STATIC_FILES else name
        for name in settings.MIDDLEWARE
    ]

    adapted = adapted_middlewares(settings, caplog)

    assert adapted == {"whitenoise.middleware.WhiteNoiseMiddleware"}


@pytest.mark.asyncio
async def test_it_serves_a_static_file_from_the_async_chain(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    (tmp_path / "app.css").write_text("body { margin: 0 }")

    response = await AsyncClient().get("/static/app.css")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"body { margin: 0 }"


@pytest.mark.asyncio
async def test_it_sends_the_policy_from_the_async_chain():
    response = await AsyncClient().get(reverse("login"))

    assert response.status_code == 200
    assert "script-src 'self'" in response["Content-Security-Policy"]


@pytest.mark.asyncio
async def test_it_refuses_a_large_body_from_the_async_chain(settings):
    settings.MAX_REQUEST_BYTES = 1024 * 1024

    response = await AsyncClient().post(
        reverse("chat-attach"),
        {"note": "x" * (1200 * 1024)},
        headers={"X-CSRFToken": "token"},
    )

    assert response.status_code == 413
    assert (
        response.json()["error"]
        == "上传的内容超过 1 MB，比这里任何文件允许的大小都大。"
    )
