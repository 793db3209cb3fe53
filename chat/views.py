from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _

from assistant import failures
from assistant.catalog import offered_models
from assistant.models import ModelProfile
from chat.models import Conversation, Message
from chat.prompt import can_extend
from chat.rendering import render_markdown

SIDEBAR_CONVERSATIONS = 50


def offered_model_names():
    return {profile.name for profile in offered_models()}


@login_required
def home(request):
    return _room(request, conversation=None)


@login_required
def conversation(request, pk):
    conversation = get_object_or_404(Conversation, pk=pk, user=request.user)
    return _room(request, conversation)


def _room(request, conversation):
    models = offered_models()
    messages = []
    if conversation is not None:
        profiles = {profile.name: profile for profile in models}
        messages = [message_data(m, profiles) for m in conversation.messages.all()]

    context = {
        "conversation": conversation,
        "conversations": request.user.conversations.all()[:SIDEBAR_CONVERSATIONS],
        "models": models,
        "selected_model": _selected_model(conversation, models),
        "page_data": {
            "conversationId": conversation.pk if conversation else None,
            "messages": messages,
            "maxMessageChars": settings.MAX_MESSAGE_CHARS,
            "serverDetailCodes": sorted(failures.SERVER_DETAIL_CODES),
            "strings": _ui_strings(),
        },
    }
    return render(request, "chat/room.html", context)


def _selected_model(conversation, models):
    names = [profile.name for profile in models]
    for candidate in (conversation and conversation.model, settings.DEFAULT_MODEL):
        if candidate in names:
            return candidate
    return names[0] if names else ""


def message_data(message, profiles=None):
    """A message as the page's script draws it.

    `profiles` maps model ids to profiles already at hand; without it, the
    reply's profile is looked up when the reply could use one.
    """
    data = {
        "id": message.pk,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "seq": message.last_seq,
    }
    if message.role == Message.Role.ASSISTANT:
        data.update(
            html=render_markdown(message.content),
            reasoning=message.reasoning,
            model=message.model,
            error_code=message.error_code,
            error_detail=message.error_detail,
            error_params=message.error_params,
            reasoning_ms=message.reasoning_ms,
            warning_code=message.warning_code,
            can_extend=_can_extend(message, profiles),
        )
    return data


def _can_extend(message, profiles):
    if message.status not in (
        Message.Status.LENGTH_IN_REASONING,
        Message.Status.LENGTH_IN_ANSWER,
    ):
        return False
    if profiles is not None and message.model in profiles:
        profile = profiles[message.model]
    else:
        profile = ModelProfile.objects.filter(name=message.model).first()
    return can_extend(message, profile)


def _ui_strings():
    """Texts the page's script shows, translated into the user's language."""
    strings = {
        "thinking": _("Thinking…"),
        "thoughtFor": _("Thought for %(seconds)s s"),
        "thoughtCut": _("Thinking was cut off (token limit)"),
        "thinkingInterrupted": _("Thinking did not finish"),
        "reasoning": _("Reasoning"),
        "queued": _("Waiting for the model…"),
        "queue.position": _("Queued for the model: position %(position)s"),
        "queue.eta": _(", about %(seconds)s s"),
        "busy.retry": _(
            "The model service is busy (%(status)s); asking again in "
            "%(seconds)s s (%(attempt)s of %(attempts)s)"
        ),
        "stop": _("Stop"),
        "send": _("Send"),
        "retry": _("Retry"),
        "retry.larger_limit": _("Retry with a larger output limit"),
        "retry.trim_history": _("Leave out older turns and retry"),
        "warning.input_truncated": _(
            "The model service read only part of what was sent; the start of "
            "the conversation was probably cut off. Start a new chat for a "
            "complete answer."
        ),
        "warning.low_output_budget": _(
            "Little room is left for the reply in this model's context, so a "
            "reasoning model may run out while thinking. A new chat leaves more."
        ),
        "copy": _("Copy"),
        "copied": _("Copied"),
        "status.stopped": _("Stopped. The text so far is kept."),
        "status.length_in_reasoning": _(
            "The model reached its output limit while still thinking, so there "
            "is no answer. Retry, or ask a shorter question."
        ),
        "status.length_in_answer": _("The answer was cut off at the output limit."),
        "status.no_answer": _(
            "The model finished thinking but gave no answer. Retry to ask again."
        ),
        "status.incomplete": _(
            "The connection to the model closed before the reply ended. The text "
            "so far is kept."
        ),
        "status.reason_unknown": _(
            "The model service ended the reply without saying why; it may be "
            "incomplete."
        ),
        "refused.empty": _("Type a message first."),
        "refused.too_long": _(
            "Your message has %(size)s characters; the limit is %(limit)s. "
            "Shorten it or split it into parts."
        ),
        "refused.unknown_model": _("That model is not available. Choose another."),
        "refused.not_found": _("That conversation or message no longer exists."),
        "refused.bad_request": _(
            "The page sent something the server did not understand."
        ),
        "connection.lost": _("Connection lost. Reconnecting…"),
        "connection.back": _("Reconnected."),
        "serverSaid": _("The server said:"),
        "details": _("Details:"),
    }
    for code in failures.MESSAGES:
        strings[f"error.{code}"] = str(failures.describe(code))
    return strings
