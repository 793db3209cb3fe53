"""How long a reply waits for a busy model server before asking again."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import openai
import pytest

from assistant import backoff
from assistant.failures import httpx


def refusal(status, retry_after=None):
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    request = httpx.Request("POST", "http://model.test/v1/chat/completions")
    response = httpx.Response(status, headers=headers, request=request)
    error_class = openai.RateLimitError if status == 429 else openai.InternalServerError
    return error_class("busy", response=response, body=None)


@pytest.fixture
def busy_limits(settings):
    settings.MODEL_API_BUSY_RETRIES = 5
    settings.MODEL_API_BUSY_MAX_WAIT = 60.0
    return settings


def test_only_429_and_503_count_as_busy():
    assert backoff.is_busy(refusal(429))
    assert backoff.is_busy(refusal(503))
    assert not backoff.is_busy(refusal(500))
    assert not backoff.is_busy(ValueError("429"))


@pytest.mark.parametrize(
    "header, seconds", [("7", 7.0), ("0", 0.0), (" 2.5 ", 2.5), ("-3", 0.0)]
)
def test_it_reads_retry_after_in_seconds(header, seconds):
    assert backoff.retry_after_seconds(refusal(429, header)) == seconds


def test_it_reads_retry_after_as_an_http_date():
    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=42), usegmt=True)

    seconds = backoff.retry_after_seconds(refusal(503, header), now=now.timestamp())

    assert seconds == pytest.approx(42)


@pytest.mark.parametrize("header", [None, "", "soon", "nan"])
def test_it_ignores_a_missing_or_unreadable_retry_after(header):
    assert backoff.retry_after_seconds(refusal(429, header)) is None


def test_waits_grow_with_each_refusal_and_are_jittered(busy_limits):
    exc = refusal(503)
    rng = random.Random(7)

    waits = [[backoff.next_wait(exc, n, rng) for n in range(1, 6)] for _ in range(50)]

    for n, column in enumerate(zip(*waits), start=1):
        ceiling = min(60.0, backoff.FIRST_WAIT_SECONDS * 2 ** (n - 1))
        assert all(ceiling / 2 <= wait <= ceiling for wait in column)
        # Workers refused together come back apart.
        assert len({round(wait, 3) for wait in column}) > 40


def test_a_wait_is_never_shorter_than_retry_after(busy_limits):
    exc = refusal(429, "9")

    waits = [backoff.next_wait(exc, 1, random.Random(seed)) for seed in range(50)]

    assert all(9 <= wait <= 10 for wait in waits)
    assert len(set(waits)) > 40


def test_it_gives_up_after_the_configured_refusals(busy_limits):
    busy_limits.MODEL_API_BUSY_RETRIES = 2
    exc = refusal(429)

    assert backoff.next_wait(exc, 2) is not None
    assert backoff.next_wait(exc, 3) is None


def test_it_gives_up_on_a_server_asking_for_more_than_the_longest_wait(busy_limits):
    busy_limits.MODEL_API_BUSY_MAX_WAIT = 30.0

    assert backoff.next_wait(refusal(429, "30"), 1) is not None
    assert backoff.next_wait(refusal(429, "31"), 1) is None
