"""Personas and small builders for the chat tests."""

from django.contrib.auth import get_user_model

from chat import tree
from chat.models import Conversation, Message


def make_user(username="researcher", password="correct-horse-9"):
    return get_user_model().objects.create_user(username=username, password=password)


def make_conversation(user, model="deepseek-r1"):
    return Conversation.objects.create(user=user, title="test", model=model)


def add_exchange(conversation, question, answer="", reasoning="", status="stop"):
    """A finished question and answer, as earlier turns of a conversation."""
    asked = Message.objects.create(
        conversation=conversation,
        parent=tree.last_message(conversation),
        role=Message.Role.USER,
        content=question,
    )
    answered = Message.objects.create(
        conversation=conversation,
        parent=asked,
        role=Message.Role.ASSISTANT,
        content=answer,
        reasoning=reasoning,
        model=conversation.model,
        status=status,
    )
    _show(conversation, answered)
    return asked, answered


def queue_reply(conversation, question, model=None):
    """A new question and its queued reply, as the consumer stores them."""
    asked = Message.objects.create(
        conversation=conversation,
        parent=tree.last_message(conversation),
        role=Message.Role.USER,
        content=question,
    )
    reply = Message.objects.create(
        conversation=conversation,
        parent=asked,
        role=Message.Role.ASSISTANT,
        model=model or conversation.model,
        status=Message.Status.QUEUED,
    )
    _show(conversation, reply)
    return asked, reply


def _show(conversation, leaf):
    conversation.current_leaf = leaf
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=leaf)
