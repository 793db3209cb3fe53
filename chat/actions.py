"""Writes that start or end work on a reply or change a conversation, shared
by the consumer and the views."""

import datetime
import logging

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from assistant.eventlog import get_event_log
from assistant.models import ModelProfile
from chat import attachments, presets, tree
from chat.models import (
    Attachment,
    Conversation,
    Message,
    SharedLink,
    new_stream_key,
)
from chat.prompt import larger_limit

logger = logging.getLogger(__name__)

# Long enough for any reply to notice; the key is only read while it streams.
STOP_KEY_TTL = 3600
# How long a deleted conversation can be brought back. After that it is
# purged for good by the next deletion of the same user, or by
# `manage.py purge_conversations`.
UNDO_WINDOW = datetime.timedelta(days=1)


def start_conversation(user, model, first_text, preset=None):
    """A new conversation, with the settings of `preset` if one was chosen."""
    conversation = Conversation(user=user, model=model)
    conversation.title = conversation.title_from(first_text)
    if preset is not None:
        presets.apply_settings(conversation, presets.values_of(preset))
    conversation.save()
    return conversation


@transaction.atomic
def post_question(
    conversation,
    text,
    model,
    attachment_ids=(),
    parent=None,
    new_conversation=False,
    posting=None,
):
    """Store the user's question and a queued reply, and queue its writing.

    The question follows `parent`, the last message the page shows, or
    without one the end of the branch on show; in a conversation just
    started (new_conversation) there is none to look for. `attachment_ids`
    name files the user uploaded for this question; any that are not theirs
    or already sent are ignored. `posting`, from queue_places.posting_to, learns the
    reply's pk before the commit.
    """
    if parent is None and not new_conversation:
        parent = tree.last_message(conversation)
    question = Message.objects.create(
        conversation=conversation, parent=parent, role=Message.Role.USER, content=text
    )
    if attachment_ids:
        attachments.claim(conversation.user, attachment_ids, question)
    reply = _queue_reply(conversation, question, model)
    if posting is not None:
        posting.reply_pk = reply.pk
    return question, reply


@transaction.atomic
def regenerate_reply(reply, model):
    """A new answer to the same question, beside the old one, which is kept.

    The new answer starts a branch of its own: whatever followed the old
    answer stays on the old branch. Returns None for an answer with no
    question to answer (the first message of an odd import).
    """
    question = reply.parent
    if question is None or question.role != Message.Role.USER:
        return None
    return _queue_reply(reply.conversation, question, model)


@transaction.atomic
def edit_question(question, text, model):
    """Send an edited question as a new version of `question`, with a reply.

    The old question and everything after it stay, as the other branch. The
    files attached to the old question go with the new one too.
    """
    conversation = question.conversation
    edited = Message.objects.create(
        conversation=conversation,
        parent=question.parent,
        role=Message.Role.USER,
        content=text,
    )
    Attachment.objects.bulk_create(
        Attachment(
            user=a.user,
            message=edited,
            name=a.name,
            kind=a.kind,
            text=a.text,
            size_bytes=a.size_bytes,
        )
        for a in question.attachments.all()
    )
    reply = _queue_reply(conversation, edited, model)
    return edited, reply


def _queue_reply(conversation, question, model):
    reply = Message.objects.create(
        conversation=conversation,
        parent=question,
        role=Message.Role.ASSISTANT,
        model=model,
        status=Message.Status.QUEUED,
    )
    conversation.model = model
    conversation.current_leaf = reply
    conversation.save(update_fields=["model", "current_leaf", "updated"])
    transaction.on_commit(lambda: _enqueue(reply.pk))
    return reply


@transaction.atomic
def show_branch(conversation, message):
    """Show the branch through `message`, as the reader last saw it."""
    return tree.show(conversation, message)


def has_open_reply(conversation):
    """Whether a reply of the conversation, on any branch, is being written."""
    return conversation.messages.filter(
        status__in=[Message.Status.QUEUED, Message.Status.STREAMING]
    ).exists()


class RetryMode:
    SAME = "same"
    LARGER_LIMIT = "larger_limit"
    TRIM_HISTORY = "trim_history"


RETRY_MODES = {RetryMode.SAME, RetryMode.LARGER_LIMIT, RetryMode.TRIM_HISTORY}


@transaction.atomic
def retry_reply(reply, mode=RetryMode.SAME):
    """Write a failed or stopped reply again from the start.

    The partial text is discarded, not continued: a retry regenerates the
    whole reply, so an answer never ends up stitched from two attempts.
    `mode` may ask for more output room or for the oldest turns to be left
    out, the two ways out of a reply that did not fit.
    """
    if mode == RetryMode.LARGER_LIMIT:
        profile = ModelProfile.ensure(reply.model)
        reply.max_tokens_override = larger_limit(reply, profile)
    elif mode == RetryMode.TRIM_HISTORY:
        reply.trim_history = True

    reply.stream_key = new_stream_key()
    reply.content = ""
    reply.reasoning = ""
    reply.status = Message.Status.QUEUED
    reply.error_code = ""
    reply.error_detail = ""
    reply.error_params = {}
    reply.prompt_tokens = reply.completion_tokens = reply.reasoning_tokens = None
    reply.queue_ms = reply.first_token_ms = reply.reasoning_ms = None
    reply.duration_ms = None
    reply.started_at = None
    reply.reasoning_started_at = None
    # The first attempt's stamp would make the queued retry look abandoned
    # to the next page that watches, until its worker starts.
    reply.heartbeat_at = None
    reply.warning_code = ""
    # A numbered "reset" tells every watching browser to clear the bubble;
    # events of the first attempt carry lower numbers and are ignored.
    reply.last_seq += 1
    reply.save()

    reset = {"message_id": reply.pk, "seq": reply.last_seq, "kind": "reset"}
    get_event_log().append(reply.stream_key, reset)
    transaction.on_commit(lambda: _enqueue(reply.pk))
    return reset


def request_stop(reply):
    cache.set(reply.stop_key, 1, STOP_KEY_TTL)


def _enqueue(reply_id):
    from chat.tasks import generate_reply

    generate_reply.delay(reply_id)


def rename_conversation(conversation, title):
    conversation.title = title
    conversation.title_is_auto = False
    conversation.save(update_fields=["title", "title_is_auto", "updated"])


def set_pinned(conversation, pinned):
    conversation.pinned = pinned
    # A pin is not activity: the conversation keeps its place by date.
    Conversation.objects.filter(pk=conversation.pk).update(pinned=pinned)


@transaction.atomic
def delete_conversation(conversation):
    """Hide a conversation at once and keep it for an undo.

    Replies still being written are stopped, so the GPU does not go on
    writing for a conversation nobody can see.
    """
    for reply in conversation.messages.filter(
        status__in=[Message.Status.QUEUED, Message.Status.STREAMING]
    ):
        request_stop(reply)
    conversation.deleted_at = timezone.now()
    Conversation.objects.filter(pk=conversation.pk).update(
        deleted_at=conversation.deleted_at
    )
    purge_deleted(user=conversation.user)


def restore_conversation(conversation):
    conversation.deleted_at = None
    Conversation.objects.filter(pk=conversation.pk).update(deleted_at=None)


def purge_deleted(user=None, now=None):
    """Delete for good the conversations whose undo window has passed."""
    cutoff = (now or timezone.now()) - UNDO_WINDOW
    expired = Conversation.objects.filter(deleted_at__lt=cutoff)
    if user is not None:
        expired = expired.filter(user=user)
    count, _by_model = expired.delete()
    if count:
        logger.info("purged %s rows of conversations deleted before %s", count, cutoff)
    return count


def share_conversation(conversation):
    """The conversation's read-only link, made if it has none."""
    link = conversation.shared_links.active().first()
    if link is None:
        link = SharedLink.objects.create(conversation=conversation)
    return link


def revoke_shares(conversation):
    conversation.shared_links.active().update(revoked_at=timezone.now())
