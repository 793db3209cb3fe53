"""Writes that start or end work on a reply, shared by the consumer and views."""

from django.core.cache import cache
from django.db import transaction

from assistant.eventlog import get_event_log
from assistant.models import ModelProfile
from chat.models import Conversation, Message, new_stream_key
from chat.prompt import larger_limit

# Long enough for any reply to notice; the key is only read while it streams.
STOP_KEY_TTL = 3600


def start_conversation(user, model, first_text):
    conversation = Conversation(user=user, model=model)
    conversation.title = conversation.title_from(first_text)
    conversation.save()
    return conversation


@transaction.atomic
def post_question(conversation, text, model):
    """Store the user's question and a queued reply, and queue its writing."""
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=text
    )
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        model=model,
        status=Message.Status.QUEUED,
    )
    if conversation.model != model:
        conversation.model = model
    conversation.save(update_fields=["model", "updated"])
    transaction.on_commit(lambda: _enqueue(reply.pk))
    return question, reply


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
