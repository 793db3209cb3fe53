"""Writes that start or end work on a reply or change a conversation, shared
by the consumer and the views."""

import collections
import datetime
import logging
import threading
from contextlib import contextmanager

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from assistant import quotas
from assistant.admission import INTERACTIVE, QueuePlace, clamp_cost, get_admission
from assistant.backends import connection_for_profile
from assistant.completion import pool_name
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
    or already sent are ignored. `posting`, from posting_to, learns the
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


class Posting:
    """A question to `model` that a thread of this process is storing.

    reply_pk is set once its reply is inserted, before the commit that
    shows the reply to other threads.
    """

    def __init__(self, model):
        self.model = model
        self.reply_pk = None


# The questions this process's threads are storing at this moment, by model:
# until they commit, the database cannot show them to each other.
_postings = collections.defaultdict(set)
_postings_lock = threading.Lock()


@contextmanager
def posting_to(model):
    """Around the estimate and the storing of a question to `model`; yields
    its Posting, for expected_place and post_question.

    In a burst several threads estimate at once, and each would otherwise
    be told it goes straight in by replies that do not exist yet. Posts in
    other processes still race; the worker's own report of its ticket
    corrects the estimate then.
    """
    posting = Posting(model)
    with _postings_lock:
        _postings[model].add(posting)
    try:
        yield posting
    finally:
        with _postings_lock:
            _postings[model].discard(posting)
            if not _postings[model]:
                del _postings[model]


def _others_posting(posting):
    with _postings_lock:
        return [
            other for other in _postings.get(posting.model, ()) if other is not posting
        ]


def expected_place(user_id, profile, posting=None):
    """Where a reply to model `profile` posted now would stand in its queue;
    None if it fits.

    Asked just before the reply is posted, so that neither the reply nor
    its worker's ticket is counted ahead of itself; replies being posted
    beside it (`posting`, from posting_to) are counted ahead. The worker
    reports the place its ticket really holds once it runs, but on a busy
    machine it may start seconds later; until then the browser would show
    a bare spinner.
    """
    pool = pool_name(profile.name, connection_for_profile(profile))
    place = get_admission().peek(pool, user_id, INTERACTIVE, profile.concurrency_limit)
    return place or place_behind_open_replies(profile.name, profile, posting)


def place_behind_open_replies(model, profile, posting=None):
    """Where a new reply stands behind the model's replies posted before it.

    When many people ask at once, the workers of their replies have not
    queued tickets yet, so the admission queue looks empty and peek() says
    every reply goes straight in. The open replies say otherwise: those
    being written hold their slots, the queued ones take what is left in
    the order they were posted, and the rest wait, a new one behind them.
    Fair order between users, and batch work in the same pool, may move it;
    the worker's own events then say. None when it fits.
    """
    capacity = profile.concurrency_limit
    if capacity is None:
        return None

    others_posting = _others_posting(posting) if posting else []
    stored = list(
        Message.objects.filter(
            model=model,
            role=Message.Role.ASSISTANT,
            status__in=[Message.Status.QUEUED, Message.Status.STREAMING],
            created__gte=quotas.in_flight_since(),
        )
        .order_by("pk")
        .values_list("pk", "status", "prompt_estimate")
    )
    stored_pks = {pk for pk, _, _ in stored}
    # Read after the query: a post that committed before it had set its
    # reply_pk before committing, so it is not counted twice.
    unseen = sum(1 for other in others_posting if other.reply_pk not in stored_pks)
    open_replies = [(status, estimate) for _, status, estimate in stored]
    open_replies += [(Message.Status.QUEUED, None)] * unseen

    def cost(prompt_estimate):
        return clamp_cost(profile.admission_cost(prompt_estimate or 0), capacity)

    streaming = Message.Status.STREAMING
    used = sum(cost(e) for status, e in open_replies if status == streaming)
    waiting = []
    for status, estimate in open_replies:
        if status == streaming:
            continue
        if not waiting and used + cost(estimate) <= capacity:
            used += cost(estimate)
        else:
            waiting.append(cost(estimate))
    if not waiting and used + cost(None) <= capacity:
        return None
    return QueuePlace(position=len(waiting) + 1, ahead_cost=sum(waiting), eta=None)


def expected_queue_data(place):
    """The `place` from expected_place as the page shows it with the question.

    Not yet the place of the worker's own ticket: the worker's queue events
    replace it.
    """
    return {"position": place.position, "eta": place.eta}


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
