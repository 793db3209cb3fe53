from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _

from assistant import failures
from assistant.catalog import offered_models
from chat.models import Conversation, Message
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
        messages = [message_data(m) for m in conversation.messages.all()]

    context = {
        "conversation": conversation,
        "conversations": request.user.conversations.all()[:SIDEBAR_CONVERSATIONS],
        "models": models,
        "selected_model": _selected_model(conversation, models),
        "page_data": {
            "conversationId": conversation.pk if conversation else None,
            "messages": messages,
            "maxMessageChars": settings.MAX_MESSAGE_CHARS,
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


def message_data(message):
    """A message as the page's script draws it."""
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
            reasoning_ms=message.reasoning_ms,
        )
    return data


def _ui_strings():
    """Texts the page's script shows, translated into the user's language."""
    strings = {
        "thinking": _("Thinking…"),
        "thoughtFor": _("Thought for %(seconds)s s"),
        "thoughtCut": _("Thinking was cut off (token limit)"),
        "reasoning": _("Reasoning"),
        "queued": _("Waiting for the model…"),
        "stop": _("Stop"),
        "send": _("Send"),
        "retry": _("Retry"),
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
    }
    for code in failures.MESSAGES:
        strings[f"error.{code}"] = str(failures.describe(code))
    return strings
