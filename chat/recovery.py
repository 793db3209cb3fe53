"""Replies whose worker died: found by a stale heartbeat, ended as interrupted.

The worker writing a reply stamps the row's heartbeat_at every third of
REPLY_HEARTBEAT_SECONDS (ReplyHeartbeat). A worker killed outright (SIGKILL,
a lost machine, the out-of-memory killer) stops stamping, and its reply
would stay open for ever. recover_abandoned() ends such replies: the text
they keep is the row's, plus the events the worker had logged after its
last save (the browsers have already shown those), and the reply ends as
interrupted so that the user can retry it. The worker's backend slot comes
back on its own when its admission lease expires (ADMISSION_LEASE_SECONDS).

It runs when a page starts watching a conversation (chat.consumers) and
every REPLY_HEARTBEAT_SECONDS in each separate Celery worker (chat.apps). The stamp
is in the database, not in Redis, so a Redis restart does not make live
replies look dead.

A reply still queued in the broker and never picked up has no stamp, and is
not touched: a task lost with the worker that had reserved it stays queued
until the user stops it.
"""

import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from assistant import metering
from assistant.eventlog import get_event_log
from assistant.models import ModelProfile, UsageRecord
from chat.models import Conversation, Message
from chat.prompt import can_extend, count_text_tokens
from chat.rendering import render_markdown
from chat.streams import ReplyPublisher

logger = logging.getLogger(__name__)

OPEN_STATUSES = (Message.Status.QUEUED, Message.Status.STREAMING)


class ReplyHeartbeat:
    """Keeps a reply's heartbeat_at fresh while the block runs.

    One thread per process stamps every reply being written there with one
    UPDATE, so the heartbeat costs one database connection per worker, not
    one per reply.
    """

    def __init__(self, reply_id):
        self.reply_id = reply_id

    def __enter__(self):
        _stamp([self.reply_id])
        _beating.add(self.reply_id)
        return self

    def __exit__(self, *exc_info):
        _beating.discard(self.reply_id)


class _Beating:
    """The ids of the replies this process is writing, and their stamper."""

    def __init__(self):
        self._ids = set()
        self._lock = threading.Lock()
        self._thread = None

    def add(self, reply_id):
        with self._lock:
            self._ids.add(reply_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._beat_forever, name="reply-heartbeat", daemon=True
                )
                self._thread.start()

    def discard(self, reply_id):
        with self._lock:
            self._ids.discard(reply_id)

    def _beat_forever(self):
        while True:
            time.sleep(settings.REPLY_HEARTBEAT_SECONDS / 3)
            with self._lock:
                ids = list(self._ids)
            if not ids:
                continue
            try:
                _stamp(ids)
            except Exception:
                # A database blip: the next beat may work, and the
                # heartbeat outlives two missed ones.
                logger.exception("heartbeat of %s replies failed", len(ids))
            finally:
                # One beat every few seconds; a connection kept between
                # them would only hold a database session open.
                connection.close()


_beating = _Beating()


def _stamp(reply_ids):
    Message.objects.filter(pk__in=reply_ids).update(heartbeat_at=timezone.now())


def abandoned_replies():
    """Open replies whose worker has not stamped them for a heartbeat period."""
    stale_before = timezone.now() - timedelta(seconds=settings.REPLY_HEARTBEAT_SECONDS)
    return Message.objects.filter(
        role=Message.Role.ASSISTANT,
        status__in=OPEN_STATUSES,
        heartbeat_at__lt=stale_before,
    ).select_related("conversation")


def recover_abandoned(replies=None):
    """End each abandoned reply as interrupted; returns how many were ended."""
    if replies is None:
        replies = abandoned_replies()
    ended = 0
    for reply in replies:
        if _end_as_interrupted(reply):
            ended += 1
    return ended


def _end_as_interrupted(reply):
    content, reasoning, last_seq = _text_with_logged_events(reply)
    stale_before = timezone.now() - timedelta(seconds=settings.REPLY_HEARTBEAT_SECONDS)

    # Only the caller that flips the row ends it: two Daphne processes, or a
    # worker's sweep and a page, may find the same reply at once, and the
    # heartbeat condition keeps a worker that came back to life in charge.
    claimed = Message.objects.filter(
        pk=reply.pk, status__in=OPEN_STATUSES, heartbeat_at__lt=stale_before
    ).update(
        status=Message.Status.INCOMPLETE,
        content=content,
        reasoning=reasoning,
        last_seq=last_seq + 1,
    )
    if not claimed:
        return False

    logger.warning(
        "reply %s lost its worker (last heartbeat %s); ended as interrupted "
        "with %s characters kept",
        reply.pk,
        reply.heartbeat_at.isoformat(),
        len(content) + len(reasoning),
    )
    reply.refresh_from_db()
    Conversation.objects.filter(pk=reply.conversation_id).update(updated=timezone.now())
    _announce_end(reply, last_seq)
    _record_usage(reply)
    return True


def _text_with_logged_events(reply):
    """The row's text plus what the log holds after the row's last save."""
    content, reasoning, last_seq = reply.content, reply.reasoning, reply.last_seq
    for event in get_event_log().read(reply.stream_key):
        if event["seq"] <= last_seq:
            continue
        last_seq = event["seq"]
        if event["kind"] == "answer":
            content += event["text"]
        elif event["kind"] == "reasoning":
            reasoning += event["text"]
        elif event["kind"] == "reclassify":
            # What looked like the answer was the start of the reasoning.
            reasoning, content = reasoning + content, ""
    return content, reasoning, last_seq


def _announce_end(reply, last_seq):
    # The publisher numbers on from the last logged event, so the end event
    # is new to every page, and a page that reads the log later finds it.
    reply.last_seq = last_seq
    publisher = ReplyPublisher(reply)
    try:
        publisher.publish(
            "end",
            status=reply.status,
            warning_code=reply.warning_code,
            can_extend=can_extend(reply, ModelProfile.ensure(reply.model)),
            error_code=reply.error_code,
            error_detail="",
            error_params={},
            html=render_markdown(reply.content),
            reasoning_ms=reply.reasoning_ms,
            first_token_ms=reply.first_token_ms,
            duration_ms=reply.duration_ms,
            usage={
                "prompt_tokens": None,
                "completion_tokens": None,
                "reasoning_tokens": None,
            },
        )
    finally:
        publisher.close()
    reply.last_seq = last_seq + 1


def _record_usage(reply):
    # The dead worker left no usage record; the request still cost what
    # it produced, estimated, as for a stopped reply.
    began = bool(reply.content or reply.reasoning)
    metering.record_request(
        user=reply.conversation.user_id,
        kind=UsageRecord.Kind.CHAT,
        model=reply.model,
        end_state=reply.status,
        error_code=reply.error_code,
        estimated_prompt_tokens=reply.prompt_estimate if began else None,
        estimated_output_tokens=count_text_tokens(reply.reasoning + reply.content),
        queue_ms=reply.queue_ms,
    )


class Sweeper:
    """Calls recover_abandoned() every REPLY_HEARTBEAT_SECONDS from a thread."""

    def __init__(self):
        self._stopped = threading.Event()

    def start(self):
        thread = threading.Thread(
            target=self._sweep_until_stopped, name="reply-sweeper", daemon=True
        )
        thread.start()
        return self

    def stop(self):
        self._stopped.set()

    def _sweep_until_stopped(self):
        while not self._stopped.wait(settings.REPLY_HEARTBEAT_SECONDS):
            try:
                recover_abandoned()
            except Exception:
                logger.exception("sweeping abandoned replies failed")
            finally:
                # A sweep is rare; holding a connection between them only
                # keeps a database session open.
                connection.close()
