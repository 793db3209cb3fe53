"""The reply task against the model simulator over real HTTP."""

import threading
import time

import pytest
from django.core.cache import cache

from assistant.eventlog import get_event_log
from assistant.models import ModelProfile
from chat import actions
from chat.models import Message
from chat.tasks import generate_reply
from chat.views import message_data
from tests.factories import add_exchange, make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db


def events_of(reply):
    return get_event_log().read(reply.stream_key)


def replay(events):
    """The texts a browser ends with after applying the events in order."""
    reasoning = answer = ""
    for event in events:
        if event["kind"] == "reasoning":
            reasoning += event["text"]
        elif event["kind"] == "answer":
            answer += event["text"]
        elif event["kind"] == "reclassify":
            reasoning, answer = reasoning + answer, ""
    return reasoning, answer


@pytest.mark.parametrize(
    "model",
    ["deepseek-r1", "deepseek-r1-vllm", "deepseek-r1-tags", "deepseek-r1-prefilled"],
)
def test_it_streams_reasoning_and_answer_apart_for_every_format(model_api, model):
    user = make_user()
    conversation = make_conversation(user, model=model)
    _, reply = queue_reply(conversation, "Why is the sky blue?")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP
    assert "sky blue" in reply.reasoning
    assert "<think>" not in reply.content and "</think>" not in reply.content
    assert "$$" in reply.content and "```python" in reply.content
    assert "</think>" not in reply.reasoning
    assert reply.reasoning_ms is not None and reply.first_token_ms is not None
    assert reply.completion_tokens and reply.prompt_tokens

    events = events_of(reply)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "stop"
    assert replay(events) == (reply.reasoning, reply.content)
    assert reply.last_seq == events[-1]["seq"]


def test_it_answers_without_a_panel_for_a_model_that_does_not_reason(model_api):
    conversation = make_conversation(make_user(), model="deepseek-v3")
    _, reply = queue_reply(conversation, "你好，介绍一下你自己")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP
    assert reply.reasoning == ""
    assert reply.reasoning_ms is None
    assert any("\u4e00" <= ch <= "\u9fff" for ch in reply.content)


def test_it_sends_answers_only_one_system_message_and_alternating_roles(model_api):
    conversation = make_conversation(make_user())
    add_exchange(
        conversation, "first question", "first answer", reasoning="secret plan"
    )
    # A failed reply with no answer: the questions around it are merged.
    add_exchange(conversation, "second question", "", status="error")
    _, reply = queue_reply(conversation, "third question")

    generate_reply(reply.pk)

    sent = model_api.stats["recent_requests"][-1]
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert sent["messages"][2]["content"] == "first answer"
    assert "second question" in sent["messages"][3]["content"]
    assert "third question" in sent["messages"][3]["content"]
    assert all("secret plan" not in m["content"] for m in sent["messages"])
    assert all("reasoning_content" not in m for m in sent["messages"])
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert 0 < sent["max_tokens"] <= 8192


@pytest.mark.parametrize(
    "status, code",
    [
        (401, "auth"),
        (429, "rate_limited"),
        (500, "server_error"),
        (503, "overloaded"),
    ],
)
def test_it_ends_with_a_typed_error_when_the_backend_refuses(
    settings, model_api, status, code
):
    # A busy answer (429, 503) is asked again; this test is about giving up.
    settings.MODEL_API_BUSY_RETRIES = 0
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "hello")
    model_api.queue_error(status, f"simulated failure {status}")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == code
    assert f"simulated failure {status}" in reply.error_detail
    assert reply.content == "" and reply.reasoning == ""
    assert events_of(reply)[-1]["error_code"] == code
    # The question stays, to be sent again.
    assert conversation.messages.filter(role="user", content="hello").exists()


@pytest.mark.parametrize(
    "message",
    [
        "context limit 8192 tokens; request needs 8700 (7676 prompt + 1024 completion)",
        "request (2117 tokens) exceeds the available context size (2048 tokens), "
        "try increasing it",
    ],
)
def test_it_reports_context_overflow_from_the_server(model_api, message):
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "hello")
    model_api.queue_error(
        400,
        "context limit 8192 tokens; request needs 8700 (7676 prompt + 1024 completion)",
    )

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.error_code == "context_overflow"
    assert "8700" in reply.error_detail


def test_it_refuses_a_prompt_over_the_input_limit_without_sending_it(model_api):
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "word " * 20000)

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == "input_too_long"
    assert reply.error_params["limit"] == 6144
    assert reply.error_params["estimate"] > 6144
    assert reply.error_detail == ""
    assert model_api.stats["requests"] == 0


def test_it_reports_an_unreachable_backend(settings, model_api):
    settings.MODEL_API_BASE_URL = "http://127.0.0.1:9/v1"
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "hello")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == "unreachable"


def test_it_ends_a_backend_that_sends_only_keep_alives(settings, model_api):
    """Keep-alive comments arrive every second; none of them is progress."""
    settings.MODEL_API_FIRST_TOKEN_TIMEOUT = 1.5
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "hello [[sim first=5]]")

    started = time.monotonic()
    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert time.monotonic() - started < 4
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == "timeout_first_token"


def test_it_ends_a_backend_that_goes_quiet_mid_reply(settings, model_api):
    settings.MODEL_API_IDLE_TIMEOUT = 0.5
    conversation = make_conversation(make_user(), model="deepseek-v3")
    _, reply = queue_reply(conversation, "hello [[sim delay=3 chunk=40]]")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == "timeout_idle"
    assert reply.content  # the first piece is kept


def test_it_keeps_text_and_the_server_message_on_an_in_band_error(model_api):
    conversation = make_conversation(make_user(), model="deepseek-v3")
    _, reply = queue_reply(conversation, "hello")
    model_api.queue_events(
        [
            '{"choices":[{"index":0,"delta":{"content":"Half an"},"finish_reason":null}]}',
            '{"error":{"message":"GPU worker crashed","type":"server_error","code":500}}',
        ]
    )

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == "in_band"
    assert reply.error_detail == "GPU worker crashed"
    assert reply.content == "Half an"


def test_it_skips_a_reply_that_is_no_longer_queued(model_api):
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "hello")
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STOP)

    generate_reply(reply.pk)

    assert model_api.stats["requests"] == 0


@pytest.mark.django_db(transaction=True)
def test_it_cuts_the_upstream_connection_within_a_second_of_stop(model_api):
    conversation = make_conversation(make_user())
    _, reply = queue_reply(
        conversation, "Tell me a long story [[sim delay=0.05 words=2000]]"
    )
    writer = threading.Thread(target=generate_reply, args=[reply.pk])
    writer.start()
    _wait_for(lambda: any(e["kind"] == "answer" for e in events_of(reply)))

    stop_requested = time.monotonic()
    actions.request_stop(reply)
    writer.join(timeout=10)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOPPED
    assert reply.content  # the partial answer is kept
    _wait_for(lambda: model_api.stats["last_disconnect_at"] is not None, seconds=3)
    assert model_api.stats["last_disconnect_at"] - stop_requested < 1.5
    # Nothing after the stop reached the log but the end.
    events = events_of(reply)
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "stopped"
    assert replay(events)[1] == reply.content


@pytest.mark.django_db(transaction=True)
def test_it_tells_a_page_loaded_mid_thinking_how_long_the_model_has_thought(
    model_api,
):
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "Think it over [[sim delay=0.05]]")
    writer = threading.Thread(target=generate_reply, args=[reply.pk])
    writer.start()
    _wait_for(lambda: any(e["kind"] == "reasoning" for e in events_of(reply)))
    time.sleep(0.5)

    thinking = Message.objects.get(pk=reply.pk)
    loaded = message_data(thinking)
    actions.request_stop(reply)
    writer.join(timeout=10)

    assert thinking.is_open and not thinking.content
    assert thinking.started_at <= thinking.reasoning_started_at
    assert loaded["thinking_ms"] >= 500
    reply.refresh_from_db()
    assert reply.reasoning_started_at == thinking.reasoning_started_at
    # An ended reply says how long it thought in reasoning_ms instead.
    assert "thinking_ms" not in message_data(reply)


def test_it_does_not_call_the_model_for_a_reply_stopped_while_queued(model_api):
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "hello")
    actions.request_stop(reply)

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOPPED
    assert model_api.stats["requests"] == 0
    cache.delete(reply.stop_key)


def _wait_for(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_it_leaves_out_the_oldest_turns_when_asked_to_fit(model_api):
    conversation = make_conversation(make_user())
    add_exchange(conversation, "old " * 9000, "old answer")
    add_exchange(conversation, "recent question", "recent answer")
    _, reply = queue_reply(conversation, "new question")

    generate_reply(reply.pk)
    reply.refresh_from_db()
    assert reply.error_code == "input_too_long"
    assert model_api.stats["requests"] == 0

    actions.retry_reply(reply, actions.RetryMode.TRIM_HISTORY)
    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP
    sent = model_api.stats["recent_requests"][-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "recent question"
    assert reply.prompt_estimate <= 6144


def test_it_offers_and_gives_a_larger_output_limit_after_a_cut(model_api):
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "think hard")
    profile = ModelProfile.ensure("deepseek-r1")
    profile.max_output_tokens = 8
    profile.save()

    generate_reply(reply.pk)
    reply.refresh_from_db()
    end = events_of(reply)[-1]
    assert reply.status == Message.Status.LENGTH_IN_REASONING
    assert reply.max_tokens == 8
    assert end["can_extend"] is True
    assert reply.warning_code == "low_output_budget"

    actions.retry_reply(reply, actions.RetryMode.LARGER_LIMIT)
    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert model_api.stats["recent_requests"][-1]["max_tokens"] == 16
    assert reply.max_tokens == 16


def test_it_warns_when_the_server_read_far_less_than_was_sent(model_api):
    conversation = make_conversation(make_user(), model="deepseek-v3")
    _, reply = queue_reply(conversation, "long input " * 2500)
    model_api.queue_events(
        [
            '{"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}',
            '{"choices":[],"usage":{"prompt_tokens":2048,"completion_tokens":1,'
            '"total_tokens":2049}}',
            "[DONE]",
        ]
    )

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP
    assert reply.prompt_tokens == 2048
    assert reply.prompt_estimate > 5000
    assert reply.warning_code == "input_truncated"
    assert events_of(reply)[-1]["warning_code"] == "input_truncated"


FAULT_OUTCOMES = {
    # fault: (status, error code, text kept)
    "http400_context": ("error", "context_overflow", False),
    "http401": ("error", "auth", False),
    "http429": ("error", "rate_limited", False),
    "http500": ("error", "server_error", False),
    "http503": ("error", "overloaded", False),
    "inband_error": ("error", "in_band", True),
    "openrouter_error": ("error", "in_band", True),
    "cut": ("incomplete", "", True),
    "finish_empty": ("reason_unknown", "", True),
    "finish_missing": ("reason_unknown", "", True),
    "length_reasoning": ("length_in_reasoning", "", True),
    "no_answer": ("no_answer", "", True),
}


@pytest.mark.parametrize("fault", sorted(FAULT_OUTCOMES))
def test_it_ends_every_simulated_fault_in_its_own_state(settings, model_api, fault):
    """Each failure a real server shows, acted out over real HTTP."""
    settings.MODEL_API_BUSY_RETRIES = 0
    status, code, keeps_text = FAULT_OUTCOMES[fault]
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, f"hello [[sim fault={fault}]]")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == (status, code)
    assert bool(reply.reasoning or reply.content) is keeps_text
    if fault == "no_answer" or fault == "length_reasoning":
        assert reply.reasoning and not reply.content
    if code:
        assert reply.error_detail
    events = events_of(reply)
    assert events[-1]["kind"] == "end" and events[-1]["status"] == status
    assert replay(events) == (reply.reasoning, reply.content)


def test_it_ends_a_backend_that_only_sends_keep_alives(settings, model_api):
    settings.MODEL_API_FIRST_TOKEN_TIMEOUT = 1.5
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "hello [[sim fault=keepalive_only]]")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.error_code == "timeout_first_token"
    _wait_for(lambda: model_api.stats["last_disconnect_at"] is not None, seconds=3)


def test_it_ends_a_reply_that_runs_past_the_wall_clock_ceiling(settings, model_api):
    settings.MODEL_API_TOTAL_TIMEOUT = 1.0
    conversation = make_conversation(make_user(), model="deepseek-v3")
    _, reply = queue_reply(conversation, "endless [[sim delay=0.05 words=5000]]")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == "timeout_total"
    assert reply.content
    assert reply.duration_ms < 3000


@pytest.mark.django_db(transaction=True)
def test_it_queues_a_second_reply_while_a_single_slot_backend_is_busy(model_api):
    """The backend never sees two requests; the waiting reply hears its place."""
    profile = ModelProfile.ensure("deepseek-v3")
    profile.concurrency_limit = 1
    profile.save()
    first_user, second_user = make_user("first"), make_user("second")
    _, first = queue_reply(
        make_conversation(first_user, "deepseek-v3"),
        "long [[sim delay=0.02 words=150]]",
    )
    _, second = queue_reply(make_conversation(second_user, "deepseek-v3"), "short")
    positions = []
    from chat.streams import ReplyPublisher

    original = ReplyPublisher.publish_live

    def record(publisher, kind, **data):
        if kind == "queue":
            positions.append(data["position"])
        original(publisher, kind, **data)

    ReplyPublisher.publish_live = record
    try:
        writers = [threading.Thread(target=generate_reply, args=[first.pk])]
        writers[0].start()
        _wait_for(lambda: any(e["kind"] == "answer" for e in events_of(first)))
        writers.append(threading.Thread(target=generate_reply, args=[second.pk]))
        writers[1].start()
        for writer in writers:
            writer.join(timeout=30)
    finally:
        ReplyPublisher.publish_live = original

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("stop", "stop")
    assert model_api.stats["max_active"] == 1
    assert positions and set(positions) == {1}
    assert second.queue_ms > 100
    assert second.started_at >= first.started_at


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_queued_reply_without_calling_the_model(model_api):
    profile = ModelProfile.ensure("deepseek-v3")
    profile.concurrency_limit = 1
    profile.save()
    user = make_user()
    _, busy = queue_reply(
        make_conversation(user, "deepseek-v3"), "x [[sim delay=0.05 words=300]]"
    )
    _, waiting = queue_reply(make_conversation(user, "deepseek-v3"), "y")
    holder = threading.Thread(target=generate_reply, args=[busy.pk])
    holder.start()
    _wait_for(lambda: any(e["kind"] == "answer" for e in events_of(busy)))

    waiter = threading.Thread(target=generate_reply, args=[waiting.pk])
    waiter.start()
    time.sleep(0.5)
    actions.request_stop(waiting)
    waiter.join(timeout=10)
    actions.request_stop(busy)
    holder.join(timeout=10)

    waiting.refresh_from_db()
    assert waiting.status == Message.Status.STOPPED
    assert model_api.stats["requests"] == 1


def _record_live(monkeypatch, kind):
    """The data of every live event of this kind any reply publishes."""
    from chat.streams import ReplyPublisher

    seen = []
    original = ReplyPublisher.publish_live

    def record(publisher, event_kind, **data):
        if event_kind == kind:
            seen.append(data)
        original(publisher, event_kind, **data)

    monkeypatch.setattr(ReplyPublisher, "publish_live", record)
    return seen


def test_it_asks_a_busy_server_again_no_sooner_than_it_says(monkeypatch, model_api):
    """A 429 with Retry-After: 3 is waited out, then the reply streams whole."""
    notices = _record_live(monkeypatch, "busy")
    conversation = make_conversation(make_user())
    _, reply = queue_reply(
        conversation, "hello [[sim fault=http429 fails=1 retry_after=3]]"
    )

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP and reply.error_code == ""
    assert reply.content and reply.reasoning
    assert model_api.stats["rejected"] == 1 and model_api.stats["completed"] == 1
    # Without the header the first wait would be at most 2 s.
    assert reply.queue_ms >= 3000
    assert notices and {n["attempt"] for n in notices} == {1}
    assert notices[0]["status_code"] == 429 and 3 <= notices[0]["seconds"] <= 4.3
    assert notices[-1]["seconds"] < 1
    # The wait is not part of the reply's own time.
    assert reply.duration_ms < reply.queue_ms


def test_it_gives_up_on_a_server_that_stays_busy(settings, monkeypatch, model_api):
    settings.MODEL_API_BUSY_RETRIES = 2
    notices = _record_live(monkeypatch, "busy")
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "hello [[sim fault=http503 retry_after=0]]")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == ("error", "overloaded")
    assert "overloaded" in reply.error_detail
    assert model_api.stats["rejected"] == 3
    assert {n["attempt"] for n in notices} == {1, 2}
    assert {n["attempts"] for n in notices} == {2}


def test_it_gives_up_at_once_on_a_server_asking_for_too_long_a_wait(
    settings, model_api
):
    settings.MODEL_API_BUSY_MAX_WAIT = 10
    conversation = make_conversation(make_user())
    _, reply = queue_reply(conversation, "hello [[sim fault=http429 retry_after=600]]")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == ("error", "rate_limited")
    assert model_api.stats["rejected"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_stop_ends_the_wait_for_a_busy_server(monkeypatch, model_api):
    notices = _record_live(monkeypatch, "busy")
    conversation = make_conversation(make_user())
    _, reply = queue_reply(
        conversation, "hello [[sim fault=http503 fails=1 retry_after=30]]"
    )
    writer = threading.Thread(target=generate_reply, args=[reply.pk])
    started = time.monotonic()
    writer.start()
    _wait_for(lambda: notices)

    actions.request_stop(reply)
    writer.join(timeout=10)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOPPED
    assert time.monotonic() - started < 10
    assert model_api.stats["requests"] == 1


def test_it_counts_each_digit_as_a_token_as_the_tokenizers_do():
    """1780 digits were once estimated under 1024 tokens and overflowed a
    llama.cpp server that counted 3696."""
    from chat.prompt import count_text_tokens

    figures = " ".join("7" for _ in range(1780))

    assert count_text_tokens(figures) >= 1780 + 1779 // 4


def test_a_question_refused_as_too_long_does_not_block_the_next(model_api):
    conversation = make_conversation(make_user())
    _, refused = queue_reply(conversation, "word " * 20000)
    generate_reply(refused.pk)
    refused.refresh_from_db()
    assert refused.error_code == "input_too_long"

    _, reply = queue_reply(conversation, "A short question.")
    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP
    sent = model_api.stats_recorder.last_request()["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert "word word" not in sent[-1]["content"]


def test_it_gives_the_models_slot_back_before_it_saves_the_end(model_api, monkeypatch):
    """The next reply in the queue need not wait for this one's bookkeeping."""
    from assistant.admission import INTERACTIVE, get_admission
    from assistant.completion import pool_name

    profile = ModelProfile.ensure("deepseek-v3")
    profile.concurrency_limit = 1
    profile.save()
    _, reply = queue_reply(make_conversation(make_user(), "deepseek-v3"), "Hello")
    pool = pool_name("deepseek-v3")
    saved = []
    save = Message.save

    def save_and_look(message, *args, **kwargs):
        if message.role == Message.Role.ASSISTANT:
            # Would a colleague's request to the model's one slot go in now?
            fits = get_admission().peek(pool, "colleague", INTERACTIVE, 1) is None
            saved.append((message.status, fits))
        return save(message, *args, **kwargs)

    monkeypatch.setattr(Message, "save", save_and_look)

    generate_reply(reply.pk)

    assert saved[0] == (Message.Status.STREAMING, False)
    assert saved[-1] == (Message.Status.STOP, True)
