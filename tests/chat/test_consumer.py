"""The chat websocket, end to end: socket, database, worker, simulator."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from assistant.asgi import application
from chat.models import Conversation, Message
from tests.conftest import REDIS_MODE
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("celery_worker"),
]

TIMEOUT = 20


@pytest.fixture(autouse=True)
def channel_layer_per_test():
    """A fresh Redis channel layer for each test's event loop.

    The Redis layer keeps locks bound to the loop that first used it, and
    every async test runs on a loop of its own. The embedded layer must stay:
    the worker thread and the consumer have to share the one instance.
    """
    from channels.layers import channel_layers

    if REDIS_MODE:
        channel_layers.backends.clear()
    yield


async def connect(user):
    """A socket signed in as `user`, bypassing the cookie handshake."""
    from chat.consumers import ChatConsumer

    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(communicator, predicate):
    """Messages up to and including the first one `predicate` accepts.

    Reply events arrive in batches; each is unpacked as a message of type
    "reply" of its own.
    """
    received = []
    while True:
        message = await communicator.receive_json_from(timeout=TIMEOUT)
        if message.get("type") == "replies":
            unpacked = [{"type": "reply", **event} for event in message["events"]]
        else:
            unpacked = [message]
        for item in unpacked:
            received.append(item)
            if predicate(item):
                return received


def is_end(message):
    return message.get("type") == "reply" and message.get("kind") == "end"


async def test_it_closes_the_socket_of_an_anonymous_visitor():
    from chat.consumers import ChatConsumer

    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    communicator.scope["user"] = AnonymousUser()
    await communicator.connect()

    closed = await communicator.receive_output(timeout=TIMEOUT)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_it_refuses_a_socket_from_another_origin():
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"origin", b"http://evil.example")]
    )
    connected, _ = await communicator.connect()

    assert not connected


async def test_it_streams_a_new_conversation_to_the_end(model_api):
    user = await database_sync_to_async(make_user)()
    communicator = await connect(user)

    await communicator.send_json_to(
        {
            "action": "send",
            "conversation_id": None,
            "text": "What is entropy?",
            "model": "deepseek-r1",
            "client_token": "t1",
        }
    )
    messages = await receive_until(communicator, is_end)
    await communicator.disconnect()

    posted = messages[0]
    assert posted["type"] == "posted" and posted["client_token"] == "t1"
    # A free model: no place in a queue to show.
    assert "expected_queue" not in posted
    kinds = [m["kind"] for m in messages[1:]]
    assert kinds[0] == "status"
    assert kinds.index("reasoning") < kinds.index("answer")
    assert "render" in kinds
    seqs = [m["seq"] for m in messages[1:] if m["kind"] != "render"]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))

    reply = await database_sync_to_async(Message.objects.get)(pk=posted["reply"]["id"])
    assert reply.status == "stop"
    assert reply.reasoning == "".join(
        m["text"] for m in messages if m.get("kind") == "reasoning"
    )
    assert reply.content == "".join(
        m["text"] for m in messages if m.get("kind") == "answer"
    )
    conversation = await database_sync_to_async(Conversation.objects.get)(user=user)
    assert conversation.title == "What is entropy?"


@pytest.mark.parametrize(
    "payload, code",
    [
        ({"text": "   "}, "empty"),
        ({"text": "x" * 60001}, "too_long"),
        ({"text": "hi", "model": "no-such-model"}, "unknown_model"),
        ({"text": "hi", "conversation_id": 999999}, "not_found"),
        ({"action": "explode"}, "bad_request"),
    ],
)
async def test_it_refuses_bad_input_with_a_code_and_stores_nothing(
    model_api, payload, code
):
    user = await database_sync_to_async(make_user)()
    communicator = await connect(user)

    await communicator.send_json_to(
        {"action": "send", "model": "deepseek-r1", **payload}
    )
    answer = await communicator.receive_json_from(timeout=TIMEOUT)
    await communicator.disconnect()

    assert answer["type"] == "refused" and answer["code"] == code
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_it_does_not_let_a_user_watch_or_stop_another_users_reply(model_api):
    owner = await database_sync_to_async(make_user)("owner")
    outsider = await database_sync_to_async(make_user)("outsider")
    conversation = await database_sync_to_async(make_conversation)(owner)
    reply = await database_sync_to_async(Message.objects.create)(
        conversation=conversation,
        role="assistant",
        status="streaming",
        model="deepseek-r1",
    )
    communicator = await connect(outsider)

    await communicator.send_json_to(
        {"action": "watch", "conversation_id": conversation.pk}
    )
    watched = await communicator.receive_json_from(timeout=TIMEOUT)
    await communicator.send_json_to({"action": "stop", "message_id": reply.pk})
    stopped = await communicator.receive_json_from(timeout=TIMEOUT)
    await communicator.disconnect()

    assert watched == {"type": "refused", "code": "not_found"}
    assert stopped == {"type": "refused", "code": "not_found"}


async def test_it_stops_a_reply_and_keeps_the_partial_text(model_api):
    user = await database_sync_to_async(make_user)()
    communicator = await connect(user)

    await communicator.send_json_to(
        {
            "action": "send",
            "text": "Long one [[sim delay=0.05 words=3000]]",
            "model": "deepseek-v3",
        }
    )
    messages = await receive_until(communicator, lambda m: m.get("kind") == "answer")
    reply_id = messages[0]["reply"]["id"]
    await communicator.send_json_to({"action": "stop", "message_id": reply_id})
    messages = await receive_until(communicator, is_end)
    await communicator.disconnect()

    assert messages[-1]["status"] == "stopped"
    reply = await database_sync_to_async(Message.objects.get)(pk=reply_id)
    assert reply.status == "stopped"
    assert reply.content and len(reply.content) < 3000


async def test_it_gives_a_late_watcher_every_event_so_far_then_the_rest(model_api):
    user = await database_sync_to_async(make_user)()
    sender = await connect(user)
    await sender.send_json_to(
        {
            "action": "send",
            "text": "Slow one [[sim delay=0.03]]",
            "model": "deepseek-r1",
        }
    )
    posted = (await receive_until(sender, lambda m: m.get("kind") == "reasoning"))[0]
    await sender.disconnect()  # the page was closed mid-reply

    watcher = await connect(user)
    await watcher.send_json_to(
        {"action": "watch", "conversation_id": posted["conversation"]["id"]}
    )
    snapshot = await watcher.receive_json_from(timeout=TIMEOUT)
    live = await receive_until(watcher, is_end)
    await watcher.disconnect()

    assert snapshot["type"] == "snapshot"
    stored = snapshot["message"]
    events = {e["seq"]: e for e in snapshot["events"]}
    events.update({m["seq"]: m for m in live if m.get("kind") != "render"})
    ordered = [events[seq] for seq in sorted(events) if seq > stored["seq"]]
    # No gap and no repeat from the stored state to the end.
    assert [e["seq"] for e in ordered] == list(
        range(stored["seq"] + 1, stored["seq"] + 1 + len(ordered))
    )
    reasoning = stored["reasoning"] + "".join(
        e["text"] for e in ordered if e["kind"] == "reasoning"
    )
    answer = stored["content"] + "".join(
        e["text"] for e in ordered if e["kind"] == "answer"
    )
    reply = await database_sync_to_async(Message.objects.get)(pk=posted["reply"]["id"])
    assert (reasoning, answer) == (reply.reasoning, reply.content)


async def test_it_sends_the_final_state_of_a_reply_the_page_missed_the_end_of(
    model_api,
):
    user = await database_sync_to_async(make_user)()
    communicator = await connect(user)
    await communicator.send_json_to(
        {"action": "send", "text": "hi", "model": "deepseek-r1"}
    )
    posted = (await receive_until(communicator, is_end))[0]

    await communicator.send_json_to(
        {
            "action": "watch",
            "conversation_id": posted["conversation"]["id"],
            "open_replies": [posted["reply"]["id"]],
        }
    )
    snapshot = await communicator.receive_json_from(timeout=TIMEOUT)
    await communicator.disconnect()

    assert snapshot["message"]["status"] == "stop"
    assert snapshot["message"]["content"]
    assert snapshot["events"] == []


async def test_it_retries_a_failed_reply_from_the_start(model_api):
    user = await database_sync_to_async(make_user)()
    communicator = await connect(user)
    model_api.queue_error(500, "GPU worker crashed")

    await communicator.send_json_to(
        {"action": "send", "text": "hello", "model": "deepseek-r1"}
    )
    first = await receive_until(communicator, is_end)
    reply_id = first[0]["reply"]["id"]
    await communicator.send_json_to({"action": "retry", "message_id": reply_id})
    second = await receive_until(communicator, is_end)
    await communicator.disconnect()

    assert first[-1]["status"] == "error" and first[-1]["error_code"] == "server_error"
    assert second[0]["kind"] == "reset"
    assert second[0]["seq"] > first[-1]["seq"]
    assert second[-1]["status"] == "stop"
    reply = await database_sync_to_async(Message.objects.get)(pk=reply_id)
    assert reply.status == "stop" and reply.error_code == ""
    assert (
        await database_sync_to_async(Message.objects.filter(role="user").count)() == 1
    )


async def test_it_tells_the_page_a_new_title():
    user = await database_sync_to_async(make_user)()
    conversation = await database_sync_to_async(make_conversation)(user)
    communicator = await connect(user)
    await communicator.send_json_to(
        {"action": "watch", "conversation_id": conversation.pk}
    )
    await communicator.receive_nothing(timeout=0.5)

    from channels.layers import get_channel_layer

    await get_channel_layer().group_send(
        conversation.group_name,
        {
            "type": "conversation.renamed",
            "conversation_id": conversation.pk,
            "title": "量子纠缠简介",
        },
    )

    message = await communicator.receive_json_from(timeout=TIMEOUT)
    assert message == {
        "type": "renamed",
        "conversation_id": conversation.pk,
        "title": "量子纠缠简介",
    }
    await communicator.disconnect()


async def test_it_shows_a_question_sent_in_one_tab_in_the_others():
    user = await database_sync_to_async(make_user)()
    conversation = await database_sync_to_async(make_conversation)(user)
    sender, watcher = await connect(user), await connect(user)
    for tab in (sender, watcher):
        await tab.send_json_to({"action": "watch", "conversation_id": conversation.pk})
    await watcher.receive_nothing(timeout=0.5)

    await sender.send_json_to(
        {
            "action": "send",
            "conversation_id": conversation.pk,
            "text": "from the other tab [[sim delay=0.001]]",
            "model": "deepseek-r1",
            "client_token": "t1",
        }
    )

    seen = await receive_until(watcher, lambda m: m.get("type") == "posted")
    posted = seen[-1]
    assert posted["question"]["content"] == "from the other tab [[sim delay=0.001]]"
    assert "client_token" not in posted
    await receive_until(watcher, is_end)
    sent = await receive_until(sender, lambda m: m.get("type") == "posted")
    assert sent[-1]["client_token"] == "t1"
    await sender.disconnect()
    await watcher.disconnect()


async def test_it_shows_a_place_in_the_queue_as_soon_as_a_question_is_posted(
    model_api,
):
    """The model's one slot is held by a colleague: the place comes at once."""
    from assistant.admission import get_admission
    from assistant.completion import pool_name
    from assistant.models import ModelProfile

    profile = await database_sync_to_async(ModelProfile.ensure)("deepseek-v3")
    profile.concurrency_limit = 1
    await database_sync_to_async(profile.save)()
    pool = await database_sync_to_async(pool_name)("deepseek-v3")
    admission = get_admission()
    colleague = admission.try_admit(admission.enqueue(pool, "colleague"), 1)
    assert colleague is not None

    user = await database_sync_to_async(make_user)()
    communicator = await connect(user)
    try:
        await communicator.send_json_to(
            {"action": "send", "text": "Queue me", "model": "deepseek-v3"}
        )
        messages = await receive_until(
            communicator, lambda m: m.get("type") == "posted"
        )
        assert messages[-1]["expected_queue"]["position"] == 1

        colleague.release()
        await receive_until(communicator, is_end)
    finally:
        colleague.release()
        await communicator.disconnect()


async def test_it_shows_a_place_behind_questions_posted_a_moment_before(model_api):
    """A burst: a colleague's reply is posted, its worker not started yet.

    The admission queue is still empty, so only the posted replies show
    that the model's one slot is spoken for.
    """
    from assistant.models import ModelProfile

    profile = await database_sync_to_async(ModelProfile.ensure)("deepseek-v3")
    profile.concurrency_limit = 1
    await database_sync_to_async(profile.save)()
    colleague = await database_sync_to_async(make_user)("colleague")
    conversation = await database_sync_to_async(make_conversation)(
        colleague, "deepseek-v3"
    )
    await database_sync_to_async(queue_reply)(conversation, "asked a moment ago")

    user = await database_sync_to_async(make_user)()
    communicator = await connect(user)
    try:
        await communicator.send_json_to(
            {"action": "send", "text": "Queue me", "model": "deepseek-v3"}
        )
        messages = await receive_until(
            communicator, lambda m: m.get("type") == "posted"
        )
        assert messages[-1]["expected_queue"] == {"position": 1, "eta": None}
        await receive_until(communicator, is_end)
    finally:
        await communicator.disconnect()


async def test_it_puts_events_that_arrive_out_of_order_back_in_order():
    """The channel layer may deliver a later batch first (channels_redis#151)."""
    from channels.layers import get_channel_layer

    from assistant.eventlog import get_event_log

    user = await database_sync_to_async(make_user)()
    conversation = await database_sync_to_async(make_conversation)(user, "deepseek-v3")
    reply = await database_sync_to_async(Message.objects.create)(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        model="deepseek-v3",
        status=Message.Status.STREAMING,
    )
    events = [
        {"message_id": reply.pk, "seq": seq, "kind": "answer", "text": f"w{seq} "}
        for seq in range(1, 7)
    ]
    log = get_event_log()
    log.extend(reply.stream_key, events[:2])
    page = await connect(user)
    await page.send_json_to({"action": "watch", "conversation_id": conversation.pk})
    snapshot = await page.receive_json_from(timeout=TIMEOUT)
    assert [e["seq"] for e in snapshot["events"]] == [1, 2]

    log.extend(reply.stream_key, events[2:])
    layer = get_channel_layer()
    for batch in (events[4:], events[2:4]):
        await layer.group_send(
            conversation.group_name, {"type": "reply.events", "events": batch}
        )
    first = await page.receive_json_from(timeout=TIMEOUT)
    late = await page.receive_nothing(timeout=1)
    await page.disconnect()

    assert [e["seq"] for e in first["events"]] == [3, 4, 5, 6]
    assert "".join(e["text"] for e in first["events"]) == "w3 w4 w5 w6 "
    # The late batch was already sent in its place.
    assert late


async def test_one_sockets_slow_write_does_not_hold_up_another_socket(
    model_api, monkeypatch
):
    """A class asking at once: each socket's database work runs beside the others'."""
    import threading

    from chat import actions

    held = threading.Event()
    release = threading.Event()
    start_conversation = actions.start_conversation

    def slow_for_the_first(user, *args, **kwargs):
        if user.username == "slow":
            held.set()
            release.wait(timeout=TIMEOUT * 2)
        return start_conversation(user, *args, **kwargs)

    monkeypatch.setattr(actions, "start_conversation", slow_for_the_first)
    slow = await connect(await database_sync_to_async(make_user)("slow"))
    quick = await connect(await database_sync_to_async(make_user)("quick"))
    try:
        await slow.send_json_to(
            {
                "action": "send",
                "text": "first [[sim delay=0.001]]",
                "model": "deepseek-v3",
            }
        )
        # Not database_sync_to_async: that thread is the one Channels shares.
        assert await asyncio.to_thread(held.wait, TIMEOUT)

        await quick.send_json_to(
            {
                "action": "send",
                "text": "second [[sim delay=0.001]]",
                "model": "deepseek-v3",
            }
        )
        posted = await receive_until(quick, lambda m: m.get("type") == "posted")
        assert not release.is_set()
        assert posted[-1]["question"]["content"] == "second [[sim delay=0.001]]"
    finally:
        release.set()
    await receive_until(slow, is_end)
    await receive_until(quick, is_end)
    await slow.disconnect()
    await quick.disconnect()


def is_estimated_place(message):
    return (
        message.get("type") == "reply"
        and message.get("kind") == "queue"
        and message.get("expected") is True
    )


async def test_it_tells_the_page_its_place_until_the_worker_reports(
    model_api, monkeypatch
):
    """The reply's task has not started (a busy worker): the web process
    keeps the page's place fresh, a page opened later included, and leaves
    it to the worker once the worker speaks."""
    from assistant.models import ModelProfile
    from chat import actions
    from chat.streams import ReplyPublisher

    held_back = []
    monkeypatch.setattr(actions, "_enqueue", held_back.append)
    profile = await database_sync_to_async(ModelProfile.ensure)("deepseek-v3")
    profile.concurrency_limit = 1
    await database_sync_to_async(profile.save)()
    colleague = await database_sync_to_async(make_user)("colleague")
    ahead = []
    for question in ("being answered", "asked a moment ago"):
        conversation = await database_sync_to_async(make_conversation)(
            colleague, "deepseek-v3"
        )
        _question, reply = await database_sync_to_async(queue_reply)(
            conversation, question
        )
        ahead.append(reply)
    await database_sync_to_async(Message.objects.filter(pk=ahead[0].pk).update)(
        status=Message.Status.STREAMING
    )

    user = await database_sync_to_async(make_user)()
    page = await connect(user)
    try:
        await page.send_json_to(
            {"action": "send", "text": "Queue me", "model": "deepseek-v3"}
        )
        posted = (await receive_until(page, lambda m: m["type"] == "posted"))[-1]
        reply_id = posted["reply"]["id"]
        assert posted["expected_queue"]["position"] == 2
        assert held_back == [reply_id]

        estimate = (await receive_until(page, is_estimated_place))[-1]
        assert (estimate["message_id"], estimate["position"]) == (reply_id, 2)

        # A page opened now hears the place too, after its snapshot.
        reloaded = await connect(user)
        await reloaded.send_json_to(
            {"action": "watch", "conversation_id": posted["conversation"]["id"]}
        )
        estimate = (await receive_until(reloaded, is_estimated_place))[-1]
        assert estimate["position"] == 2
        await reloaded.disconnect()

        # The colleague's first reply ends and the second starts.
        await database_sync_to_async(Message.objects.filter(pk=ahead[0].pk).update)(
            status=Message.Status.STOP
        )
        await database_sync_to_async(Message.objects.filter(pk=ahead[1].pk).update)(
            status=Message.Status.STREAMING
        )
        moved = await receive_until(
            page, lambda m: is_estimated_place(m) and m["position"] == 1
        )
        assert moved[-1]["message_id"] == reply_id

        # The worker starts the task and reports its ticket's place.
        reply = await database_sync_to_async(
            Message.objects.select_related("conversation").get
        )(pk=reply_id)
        publisher = await database_sync_to_async(ReplyPublisher)(reply)
        publisher.publish_live("queue", position=1, eta=3.0)
        await asyncio.to_thread(publisher.close)
        reported = await receive_until(
            page, lambda m: m.get("kind") == "queue" and "expected" not in m
        )
        assert reported[-1]["eta"] == 3.0
        # From then on the worker alone speaks of the place.
        assert await page.receive_nothing(timeout=1.5)
    finally:
        await page.disconnect()
