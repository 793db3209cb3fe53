"""Replies whose worker died end as interrupted, keeping every shown word."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from assistant.eventlog import get_event_log
from assistant.models import UsageRecord
from chat.models import Message
from chat.recovery import ReplyHeartbeat, recover_abandoned
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db(transaction=True)


def streaming_reply(heartbeat_age, content="Light is ", last_seq=2):
    conversation = make_conversation(make_user(), model="deepseek-v3")
    _, reply = queue_reply(conversation, "What is light?")
    Message.objects.filter(pk=reply.pk).update(
        status=Message.Status.STREAMING,
        content=content,
        last_seq=last_seq,
        heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age),
    )
    reply.refresh_from_db()
    return reply


def log_answer(reply, *texts):
    events = [
        {"message_id": reply.pk, "seq": seq, "kind": "answer", "text": text}
        for seq, text in enumerate(texts, start=1)
    ]
    get_event_log().extend(reply.stream_key, events)


def test_it_ends_a_reply_with_a_stale_heartbeat_with_its_logged_text(settings):
    settings.REPLY_HEARTBEAT_SECONDS = 5
    reply = streaming_reply(heartbeat_age=30)
    log_answer(reply, "Light ", "is ", "a wave ", "and a particle.")

    assert recover_abandoned() == 1

    reply.refresh_from_db()
    assert reply.status == Message.Status.INCOMPLETE
    # Two events were in the row already; the other two come from the log.
    assert reply.content == "Light is a wave and a particle."
    end = get_event_log().read(reply.stream_key)[-1]
    assert end["kind"] == "end" and end["status"] == "incomplete"
    assert end["seq"] == 5 and reply.last_seq == 5
    usage = UsageRecord.objects.get()
    assert usage.end_state == "incomplete" and usage.counted_tokens > 0


def test_it_leaves_a_reply_whose_worker_is_alive(settings):
    settings.REPLY_HEARTBEAT_SECONDS = 5
    reply = streaming_reply(heartbeat_age=1)

    assert recover_abandoned() == 0

    reply.refresh_from_db()
    assert reply.status == Message.Status.STREAMING


def test_it_leaves_a_queued_reply_no_worker_has_taken(settings):
    settings.REPLY_HEARTBEAT_SECONDS = 5
    conversation = make_conversation(make_user(), model="deepseek-v3")
    _, reply = queue_reply(conversation, "What is light?")

    assert recover_abandoned() == 0

    reply.refresh_from_db()
    assert reply.status == Message.Status.QUEUED


def test_it_ends_a_reply_only_once(settings):
    settings.REPLY_HEARTBEAT_SECONDS = 5
    reply = streaming_reply(heartbeat_age=30)
    stale = list(Message.objects.filter(pk=reply.pk).select_related("conversation"))

    assert recover_abandoned(stale) == 1
    assert recover_abandoned(stale) == 0
    assert UsageRecord.objects.count() == 1


def test_the_heartbeat_stamps_the_reply_while_it_runs(settings):
    settings.REPLY_HEARTBEAT_SECONDS = 1.5
    reply = streaming_reply(heartbeat_age=60)

    stale = reply.heartbeat_at

    with ReplyHeartbeat(reply.pk):
        reply.refresh_from_db()
        first = renewed = reply.heartbeat_at
        # A beat every half second, once the thread has woken from a
        # longer sleep begun under an earlier setting.
        deadline = time.monotonic() + 10
        while renewed == first and time.monotonic() < deadline:
            time.sleep(0.25)
            reply.refresh_from_db()
            renewed = reply.heartbeat_at

    # Stamped on entry, then again by the process's heartbeat thread.
    assert first > stale
    assert renewed > first
    assert recover_abandoned() == 0


def test_it_leaves_a_retried_reply_waiting_for_its_worker(settings, monkeypatch):
    """A retry is queued again: its first attempt's stamp is not its own."""
    from chat import actions

    settings.REPLY_HEARTBEAT_SECONDS = 5
    held_back = []
    monkeypatch.setattr(actions, "_enqueue", held_back.append)
    reply = streaming_reply(heartbeat_age=600)
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STOPPED)
    reply.refresh_from_db()

    actions.retry_reply(reply)

    assert held_back == [reply.pk]
    assert recover_abandoned() == 0
    reply.refresh_from_db()
    assert reply.status == Message.Status.QUEUED
