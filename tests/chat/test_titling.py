"""Titles a model suggests after a conversation's first answer."""

import asyncio
import threading
import time

import pytest
from channels.layers import get_channel_layer

from chat import actions, titling
from chat.models import Conversation, Message
from chat.tasks import generate_reply
from tests.factories import add_exchange, make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "deepseek-r1"

TITLE_EVENTS = [
    '{"choices":[{"index":0,"delta":{"content":"“Self-attention"},"finish_reason":null}]}',
    '{"choices":[{"index":0,"delta":{"content":" explained”。\\n"},"finish_reason":"stop"}]}',
    "[DONE]",
]


def test_it_asks_a_model_that_does_not_reason_and_cleans_its_title(model_api):
    conversation = make_conversation(make_user())
    add_exchange(conversation, "What is self-attention?", "It relates positions.")
    model_api.queue_events(TITLE_EVENTS)

    title = titling.retitle(conversation.pk)

    conversation.refresh_from_db()
    assert title == conversation.title == "Self-attention explained"
    sent = model_api.stats["recent_requests"][-1]
    assert sent["model"] == "deepseek-v3"
    assert sent["max_tokens"] == titling.TITLE_MAX_TOKENS
    assert "What is self-attention?" in sent["messages"][-1]["content"]


def test_it_never_replaces_a_title_the_user_gave(model_api):
    conversation = make_conversation(make_user())
    add_exchange(conversation, "question", "answer")
    Conversation.objects.filter(pk=conversation.pk).update(
        title="Mine", title_is_auto=False
    )

    assert titling.retitle(conversation.pk) is None

    conversation.refresh_from_db()
    assert conversation.title == "Mine"
    assert model_api.stats["requests"] == 0


# Not transactional: the replies the actions queue are never handed to a
# worker, so none of them can reach the simulator after the test.
@pytest.mark.django_db
def test_it_keeps_the_models_title_through_edits_regenerations_and_switches(
    model_api,
):
    conversation = make_conversation(make_user())
    question, _answer = add_exchange(conversation, "What is self-attention?", "It…")
    model_api.queue_events(TITLE_EVENTS)
    assert titling.retitle(conversation.pk) == "Self-attention explained"

    edited, reply = actions.edit_question(question, "What is a transformer?", MODEL)
    _finish(reply, "A stack of attention layers.")
    conversation.refresh_from_db()
    assert not titling.needs_title(conversation)
    assert titling.retitle(conversation.pk) is None

    actions.regenerate_reply(reply, MODEL)
    actions.show_branch(conversation, question)

    conversation.refresh_from_db()
    assert conversation.title == "Self-attention explained"
    assert model_api.stats["requests"] == 1


@pytest.mark.django_db
def test_it_titles_an_edited_first_question_only_once_its_answer_ended(model_api):
    """A title written while the edited question's answer streams would be
    about an answer nobody has read yet."""
    conversation = make_conversation(make_user())
    question, _answer = add_exchange(conversation, "q", "answer", status="error")
    _edited, reply = actions.edit_question(question, "What is self-attention?", MODEL)

    assert titling.retitle(conversation.pk) is None

    _finish(reply, "It relates positions.")
    model_api.queue_events(TITLE_EVENTS)
    assert titling.retitle(conversation.pk) == "Self-attention explained"


def _finish(reply, content):
    reply.content = content
    reply.status = Message.Status.STOP
    reply.save(update_fields=["content", "status"])


def test_it_keeps_the_first_words_when_the_model_fails(model_api):
    conversation = make_conversation(make_user())
    add_exchange(conversation, "question", "answer")
    model_api.queue_error(500, "GPU worker crashed", "server_error")

    assert titling.retitle(conversation.pk) is None

    conversation.refresh_from_db()
    assert conversation.title == "test"


def test_it_titles_only_with_a_model_that_does_not_reason(settings, model_api):
    settings.TITLE_MODEL = "deepseek-r1"
    assert titling.title_model().name == "deepseek-r1"
    settings.TITLE_MODEL = "no-such-model"
    assert titling.title_model() is None


class GroupListener:
    """Hears a group's messages of one type, on a loop of its own in a thread."""

    def __init__(self, group, message_type):
        self.group = group
        self.message_type = message_type
        self.heard = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._listen()))

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc_info):
        self.thread.join(timeout=30)

    async def _listen(self):
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        self.ready.set()
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            try:
                message = await asyncio.wait_for(layer.receive(channel), 1)
            except TimeoutError:
                continue
            if message["type"] == self.message_type:
                self.heard = message
                return


def test_it_titles_after_the_first_answer_and_tells_the_page(
    settings, model_api, celery_worker
):
    """End to end: the reply task queues the title, the worker writes it and
    the conversation's group hears of it."""
    settings.AUTO_TITLES = True
    conversation = make_conversation(make_user())
    conversation.title = conversation.title_from("为什么天空是蓝色的？")
    conversation.save()
    _question, reply = queue_reply(conversation, "为什么天空是蓝色的？", "deepseek-v3")

    with GroupListener(conversation.group_name, "conversation.renamed") as listener:
        generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP
    title = Conversation.objects.get(pk=conversation.pk).title
    assert title == "为什么天空是蓝色的"
    assert listener.heard is not None
    assert listener.heard["title"] == title


@pytest.mark.parametrize(
    ("reply_text", "expected"),
    [
        ("## **Gradient descent**\n\nMore text", "Gradient descent"),
        ("《量子纠缠简介》。", "量子纠缠简介"),
        ("\n\n  \n", None),
        ("x" * 100, "x" * 59 + "…"),
    ],
)
def test_it_cleans_a_title(reply_text, expected):
    assert titling.clean_title(reply_text) == expected


def test_it_asks_for_a_title_later_while_the_model_is_busy(model_api):
    """A title waiting in the queue would hold a worker thread; none is asked."""
    from celery.exceptions import Retry

    from assistant.admission import get_admission
    from assistant.completion import pool_name
    from assistant.models import ModelProfile
    from chat.tasks import title_conversation

    profile = ModelProfile.ensure("deepseek-v3")
    ModelProfile.objects.filter(pk=profile.pk).update(concurrency_limit=1)
    conversation = make_conversation(make_user())
    add_exchange(conversation, "What is self-attention?", "It relates positions.")
    admission = get_admission()
    pool = pool_name("deepseek-v3")
    reply_in_progress = admission.try_admit(admission.enqueue(pool, "colleague"), 1)
    try:
        with pytest.raises(Retry):
            title_conversation(conversation.pk)
        assert model_api.stats["requests"] == 0
    finally:
        reply_in_progress.release()

    model_api.queue_events(TITLE_EVENTS)
    title_conversation(conversation.pk)

    conversation.refresh_from_db()
    assert conversation.title == "Self-attention explained"
