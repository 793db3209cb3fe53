"""Regenerate, edit and switch over the chat websocket, end to end."""

import pytest
from channels.db import database_sync_to_async

from chat import actions
from chat.models import Conversation, Message
from tests.chat.test_consumer import (
    TIMEOUT,
    channel_layer_per_test,  # noqa: F401 - an autouse fixture
    connect,
    receive_until,
)
from tests.factories import add_exchange, make_conversation, make_user, queue_reply

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("celery_worker"),
]

MODEL = "deepseek-r1"


@database_sync_to_async
def conversation_with_exchange(user):
    conversation = make_conversation(user)
    question, answer = add_exchange(conversation, "What is entropy?", "old answer")
    return conversation, question, answer


def seen_path_and_end():
    """A predicate for receive_until: true once a path and an end have come."""
    seen = set()

    def predicate(message):
        if message.get("type") == "path":
            seen.add("path")
        if message.get("type") == "reply" and message.get("kind") == "end":
            seen.add("end")
        return seen == {"path", "end"}

    return predicate


def the_path(messages):
    return [m for m in messages if m.get("type") == "path"][-1]["messages"]


async def test_it_regenerates_an_answer_and_keeps_the_old_one(model_api):
    user = await database_sync_to_async(make_user)()
    conversation, question, old = await conversation_with_exchange(user)
    communicator = await connect(user)

    await communicator.send_json_to(
        {"action": "regenerate", "message_id": old.pk, "model": MODEL}
    )
    messages = await receive_until(communicator, seen_path_and_end())
    await communicator.disconnect()

    path = the_path(messages)
    assert [m["id"] for m in path][0] == question.pk
    new = path[-1]
    assert new["parent_id"] == question.pk and new["id"] != old.pk
    assert new["branch"] == {
        "index": 2,
        "count": 2,
        "previous": old.pk,
        "next": None,
    }
    stored = await database_sync_to_async(Message.objects.get)(pk=new["id"])
    assert stored.status == "stop" and stored.content
    kept = await database_sync_to_async(Message.objects.get)(pk=old.pk)
    assert kept.content == "old answer"


async def test_it_sends_an_edited_question_as_a_new_branch(model_api):
    user = await database_sync_to_async(make_user)()
    conversation, question, old = await conversation_with_exchange(user)
    communicator = await connect(user)

    await communicator.send_json_to(
        {
            "action": "edit",
            "message_id": question.pk,
            "text": "What is entropy, briefly?",
            "model": MODEL,
        }
    )
    messages = await receive_until(communicator, seen_path_and_end())
    await communicator.disconnect()

    edited, reply = the_path(messages)
    assert edited["content"] == "What is entropy, briefly?"
    assert (
        edited["branch"]["index"] == 2 and edited["branch"]["previous"] == question.pk
    )
    assert reply["parent_id"] == edited["id"]
    count = await database_sync_to_async(conversation.messages.count)()
    assert count == 4


async def test_it_refuses_an_empty_edit_and_stores_nothing(model_api):
    user = await database_sync_to_async(make_user)()
    conversation, question, _old = await conversation_with_exchange(user)
    communicator = await connect(user)

    await communicator.send_json_to(
        {"action": "edit", "message_id": question.pk, "text": " ", "model": MODEL}
    )
    answer = await communicator.receive_json_from(timeout=TIMEOUT)
    await communicator.disconnect()

    assert answer == {"type": "refused", "code": "empty"}
    assert await database_sync_to_async(conversation.messages.count)() == 2


async def test_it_switches_every_tab_of_the_conversation_to_a_branch(model_api):
    user = await database_sync_to_async(make_user)()
    conversation, _question, old = await conversation_with_exchange(user)
    await database_sync_to_async(_regenerated_and_done)(old)
    switching = await connect(user)
    other_tab = await connect(user)
    await other_tab.send_json_to(
        {"action": "watch", "conversation_id": conversation.pk}
    )
    await other_tab.receive_nothing(timeout=0.3)

    await switching.send_json_to({"action": "switch", "message_id": old.pk})
    here = await switching.receive_json_from(timeout=TIMEOUT)
    there = await other_tab.receive_json_from(timeout=TIMEOUT)
    await switching.disconnect()
    await other_tab.disconnect()

    for message in (here, there):
        assert message["type"] == "path"
        assert message["messages"][-1]["id"] == old.pk
        assert message["messages"][-1]["branch"]["index"] == 1
    stored = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert stored.current_leaf_id == old.pk


def _regenerated_and_done(old):
    new = Message.objects.create(
        conversation=old.conversation,
        parent=old.parent,
        role=Message.Role.ASSISTANT,
        model=MODEL,
        content="new answer",
    )
    actions.show_branch(old.conversation, new)
    return new


async def test_it_refuses_to_branch_while_a_reply_is_written(model_api):
    user = await database_sync_to_async(make_user)()
    conversation, question, old = await conversation_with_exchange(user)
    await database_sync_to_async(_regenerated_and_done)(old)
    await database_sync_to_async(queue_reply)(conversation, "still writing")
    communicator = await connect(user)

    answers = []
    for action in (
        {"action": "regenerate", "message_id": old.pk, "model": MODEL},
        {"action": "edit", "message_id": question.pk, "text": "x", "model": MODEL},
        {"action": "switch", "message_id": old.pk},
    ):
        await communicator.send_json_to(action)
        answers.append(await communicator.receive_json_from(timeout=TIMEOUT))
    await communicator.disconnect()

    assert answers == [{"type": "refused", "code": "busy"}] * 3
    assert await database_sync_to_async(conversation.messages.count)() == 5


async def test_it_never_lets_another_user_regenerate_edit_or_switch(model_api):
    owner = await database_sync_to_async(make_user)("owner")
    outsider = await database_sync_to_async(make_user)("outsider")
    conversation, question, old = await conversation_with_exchange(owner)
    new = await database_sync_to_async(_regenerated_and_done)(old)
    communicator = await connect(outsider)

    answers = []
    for action in (
        {"action": "regenerate", "message_id": new.pk, "model": MODEL},
        {"action": "edit", "message_id": question.pk, "text": "mine", "model": MODEL},
        {"action": "switch", "message_id": old.pk},
        {"action": "path", "conversation_id": conversation.pk},
    ):
        await communicator.send_json_to(action)
        answers.append(await communicator.receive_json_from(timeout=TIMEOUT))
    await communicator.disconnect()

    assert answers == [{"type": "refused", "code": "not_found"}] * 4
    assert await database_sync_to_async(conversation.messages.count)() == 3
    stored = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert stored.current_leaf_id == new.pk
