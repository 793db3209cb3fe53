"""One usage record and one log line per model request, on every path."""

import logging
import threading
import time

import pytest

from assistant.eventlog import get_event_log
from assistant.metering import counted_tokens, record_request
from assistant.models import UsageRecord
from chat import actions
from chat.tasks import generate_reply
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db


def events_of(reply):
    return get_event_log().read(reply.stream_key)


def wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_it_records_a_finished_reply_with_the_servers_counts(model_api):
    user = make_user()
    _, reply = queue_reply(make_conversation(user), "Why is the sky blue?")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    record = UsageRecord.objects.get()
    assert record.user == user
    assert record.kind == UsageRecord.Kind.CHAT
    assert record.model == "deepseek-r1"
    assert record.end_state == UsageRecord.EndState.STOP
    assert record.error_code == ""
    assert record.prompt_tokens == reply.prompt_tokens > 0
    assert record.completion_tokens == reply.completion_tokens > 0
    assert record.reasoning_tokens == reply.reasoning_tokens
    assert record.counted_tokens == reply.prompt_tokens + reply.completion_tokens
    assert record.queue_ms is not None
    assert record.first_token_ms == reply.first_token_ms
    assert record.duration_ms == reply.duration_ms


@pytest.mark.django_db(transaction=True)
def test_it_keeps_unknown_counts_unknown_and_charges_an_estimate(model_api):
    """A reply stopped mid-stream gets no usage chunk: None, not 0."""
    conversation = make_conversation(make_user())
    _, reply = queue_reply(
        conversation, "Tell me a long story [[sim delay=0.05 words=2000]]"
    )
    writer = threading.Thread(target=generate_reply, args=[reply.pk])
    writer.start()
    wait_for(lambda: any(e["kind"] == "answer" for e in events_of(reply)))

    actions.request_stop(reply)
    writer.join(timeout=10)

    record = UsageRecord.objects.get()
    assert record.end_state == UsageRecord.EndState.STOPPED
    assert record.prompt_tokens is None
    assert record.completion_tokens is None
    assert record.reasoning_tokens is None
    # The estimated prompt plus the text that arrived.
    reply.refresh_from_db()
    assert record.counted_tokens > reply.prompt_estimate > 0


def test_it_records_a_refused_request_with_its_error_code(settings, model_api):
    settings.MODEL_API_BUSY_RETRIES = 0
    _, reply = queue_reply(make_conversation(make_user()), "hello")
    model_api.queue_error(500, "simulated failure")

    generate_reply(reply.pk)

    record = UsageRecord.objects.get()
    assert record.end_state == UsageRecord.EndState.ERROR
    assert record.error_code == "server_error"
    assert record.prompt_tokens is None and record.completion_tokens is None
    assert record.counted_tokens == 0


def test_it_records_a_prompt_too_long_that_was_never_sent(model_api):
    _, reply = queue_reply(make_conversation(make_user()), "word " * 20000)

    generate_reply(reply.pk)

    record = UsageRecord.objects.get()
    assert record.error_code == "input_too_long"
    assert record.counted_tokens == 0
    assert record.duration_ms is None
    assert model_api.stats["requests"] == 0


def test_it_records_a_reply_stopped_before_it_was_sent(model_api):
    _, reply = queue_reply(make_conversation(make_user()), "hello")
    actions.request_stop(reply)

    generate_reply(reply.pk)

    record = UsageRecord.objects.get()
    assert record.end_state == UsageRecord.EndState.STOPPED
    assert record.counted_tokens == 0


def test_it_logs_one_line_per_request_without_the_message_text(model_api, caplog):
    user = make_user()
    _, reply = queue_reply(make_conversation(user), "my secret draft title")

    with caplog.at_level(logging.INFO, logger="assistant.metering"):
        generate_reply(reply.pk)

    lines = [r.getMessage() for r in caplog.records if r.name == "assistant.metering"]
    assert len(lines) == 1
    assert f"user={user.pk} " in lines[0]
    assert "model=deepseek-r1 " in lines[0] and "end=stop " in lines[0]
    assert "queue_ms=" in lines[0] and "duration_ms=" in lines[0]
    assert "secret" not in lines[0]


def test_it_counts_prompt_and_completion_but_not_reasoning_twice():
    assert counted_tokens(100, 50) == 150
    assert counted_tokens(None, None, 100, 30) == 130
    assert counted_tokens(100, None, 90, 30) == 130
    assert counted_tokens() == 0


def test_it_records_other_kinds_through_the_same_function():
    user = make_user()

    record = record_request(
        user=user,
        kind="polish",
        model="deepseek-v3",
        end_state="stop",
        prompt_tokens=10,
        completion_tokens=5,
        reasoning_tokens=None,
    )

    record.refresh_from_db()
    assert record.kind == UsageRecord.Kind.POLISH
    assert record.counted_tokens == 15
    assert record.reasoning_tokens is None
