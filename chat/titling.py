"""Titles for conversations, suggested by a model after the first answer.

Until the suggestion arrives, and whenever it cannot be had, a conversation
is titled with the first words of its question (Conversation.title_from).
The suggestion costs one short request at batch priority, so it waits
behind every chat reply for the same model and never delays one. It is not
even asked while the model's queue is busy (model_is_busy): a title waiting
there would hold a worker thread that a reply may need, so its task asks
again later instead.

A conversation is titled once. The reader who edits the first question,
writes its answer again or switches between branches keeps the title they
have learnt to find the conversation by.
"""

import logging

import openai
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from assistant import failures
from assistant.admission import BATCH, Cancelled, get_admission
from assistant.catalog import offered_models
from assistant.completion import CompletionFailure, complete, pool_name
from chat import tree
from chat.models import TITLE_MAX_CHARS, Conversation, Message
from chat.prompt import estimate_tokens

logger = logging.getLogger(__name__)

TITLE_MAX_TOKENS = 40
# Enough of the exchange to say what it is about.
EXCERPT_CHARS = 1500
EXCHANGE_HEADING = "Conversation to title:"
TITLE_INSTRUCTIONS = (
    "Write a title for the conversation below: at most eight words, or at "
    "most sixteen characters in Chinese, in the language of the question. "
    "Reply with the title alone, without quotation marks or a full stop."
)
STRIP_CHARS = " \t#*_`\"'“”‘’《》「」【】。.!！?？:："


def wants_title(conversation):
    """True when this process titles conversations and this one needs it."""
    return settings.AUTO_TITLES and needs_title(conversation)


def needs_title(conversation):
    """True for a conversation still titled by its first words whose first
    exchange ended well.

    The first exchange of the branch on show: when the first answer could
    not be titled (it failed, or the model did), an edited first question
    or an answer written again is titled instead.
    """
    return (
        conversation.title_is_auto
        and conversation.deleted_at is None
        and len(_first_exchange(conversation)) == 2
    )


def _first_exchange(conversation):
    """The branch on show, if it is one question and an answer that ended
    well; else []."""
    messages = conversation.messages.only(*tree.SKELETON_FIELDS, "status")
    path = tree.active_path(conversation, messages)
    if len(path) != 2 or path[1].status != Message.Status.STOP:
        return []
    return path


def title_model():
    """The profile of the model that writes titles, or None."""
    profiles = offered_models()
    if settings.TITLE_MODEL:
        return next((p for p in profiles if p.name == settings.TITLE_MODEL), None)
    return next((p for p in profiles if not p.is_reasoning), None)


def model_is_busy(conversation_id):
    """Whether a title asked now would have to wait in its model's queue."""
    profile = title_model()
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if profile is None or conversation is None:
        return False
    place = get_admission().peek(
        pool_name(profile.name), conversation.user_id, BATCH, profile.concurrency_limit
    )
    return place is not None


def suggest_title(conversation, profile):
    """The model's title for the conversation's first exchange, or None."""
    question, answer = conversation.messages.filter(
        pk__in=[m.pk for m in _first_exchange(conversation)]
    ).order_by("created", "id")
    messages = [
        {"role": "system", "content": TITLE_INSTRUCTIONS},
        {
            "role": "user",
            "content": f"{EXCHANGE_HEADING}\n\n"
            f"Question:\n{question.content[:EXCERPT_CHARS]}\n\n"
            f"Answer:\n{answer.content[:EXCERPT_CHARS]}",
        },
    ]
    completion = complete(
        profile,
        messages,
        TITLE_MAX_TOKENS,
        user_id=conversation.user_id,
        kind="chat",
        priority=BATCH,
        stop_key=f"chat:title-stop:{conversation.pk}",
        prompt_estimate=estimate_tokens(messages),
    )
    return clean_title(completion.answer)


def clean_title(text):
    """The first line of a model's reply, without decoration, within bounds."""
    lines = [line.strip(STRIP_CHARS) for line in text.strip().splitlines()]
    title = next((line for line in lines if line), "")
    title = " ".join(title.split())
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    return title or None


def retitle(conversation_id):
    """Suggest, store and announce a title; keep the first words on failure."""
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None or not needs_title(conversation):
        return None
    profile = title_model()
    if profile is None:
        logger.info("no model that does not reason is offered; titles stay as typed")
        return None

    try:
        title = suggest_title(conversation, profile)
    except (CompletionFailure, Cancelled, openai.OpenAIError) as exc:
        code, detail = (
            (exc.code, exc.detail)
            if isinstance(exc, CompletionFailure)
            else failures.classify(exc)
        )
        logger.warning(
            "no title for conversation %s from %s: %s %s",
            conversation_id,
            profile.name,
            code,
            detail,
        )
        return None
    if not title:
        return None

    # A rename while the model wrote wins over the suggestion, and so does
    # a title another request wrote first. Once written the title stays.
    changed = Conversation.objects.filter(pk=conversation_id, title_is_auto=True)
    if not changed.update(title=title, title_is_auto=False):
        return None
    async_to_sync(get_channel_layer().group_send)(
        conversation.group_name,
        {
            "type": "conversation.renamed",
            "conversation_id": conversation_id,
            "title": title,
        },
    )
    return title
