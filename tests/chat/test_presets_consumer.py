"""A new conversation started from a preset over the chat websocket."""

import pytest
from channels.db import database_sync_to_async

from chat.models import Conversation, Preset
from tests.chat.test_consumer import (  # noqa: F401 - the fixture is autouse
    channel_layer_per_test,
    connect,
    is_end,
    receive_until,
)
from tests.factories import make_user

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("celery_worker"),
]


def send(text, preset):
    return {
        "action": "send",
        "conversation_id": None,
        "text": text,
        "model": "deepseek-v3",
        "preset": preset,
        "client_token": "t1",
    }


async def test_it_starts_a_conversation_from_the_users_preset(model_api):
    user = await database_sync_to_async(make_user)()
    preset = await database_sync_to_async(Preset.objects.create)(
        user=user, name="terse", prompt="One paragraph only.", temperature=0.1
    )
    communicator = await connect(user)

    await communicator.send_json_to(send("What is entropy?", str(preset.pk)))
    await receive_until(communicator, is_end)
    await communicator.disconnect()

    conversation = await database_sync_to_async(Conversation.objects.get)(user=user)
    assert conversation.preset_prompt == "One paragraph only."
    assert conversation.temperature == 0.1
    # The reply's request; a title may be asked for after it.
    [body] = [
        b
        for b in model_api.stats["recent_requests"]
        if b["messages"][0]["content"].endswith("One paragraph only.")
    ]
    assert body["temperature"] == 0.1


async def test_it_refuses_another_users_preset_and_starts_nothing(model_api):
    owner = await database_sync_to_async(make_user)()
    outsider = await database_sync_to_async(make_user)("outsider")
    theirs = await database_sync_to_async(Preset.objects.create)(
        user=owner, name="private", prompt="Private."
    )
    communicator = await connect(outsider)

    await communicator.send_json_to(send("Hello", str(theirs.pk)))
    answer = await communicator.receive_json_from(timeout=20)
    await communicator.disconnect()

    assert answer == {"type": "refused", "code": "unknown_preset"}
    exists = await database_sync_to_async(
        Conversation.objects.filter(user=outsider).exists
    )()
    assert not exists
