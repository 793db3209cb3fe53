"""Exporting conversations as Markdown, JSON and an archive, and importing back."""

import io
import json
import zipfile

import markdown
import pytest
from django.urls import reverse

from chat.exports import MAX_IMPORT_BYTES
from chat.models import Conversation, Message
from tests.factories import add_exchange, make_conversation, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher(client):
    user = make_user()
    client.force_login(user)
    return user


@pytest.fixture
def conversation(researcher):
    conversation = make_conversation(researcher)
    conversation.title = "注意力 and $E=mc^2$"
    conversation.save()
    add_exchange(
        conversation,
        "What is $\\alpha$?",
        "It is\n\n$$\\alpha = 1$$\n\n```python\nprint('hi')\n```",
        reasoning="The user asks about alpha.",
    )
    add_exchange(conversation, "再说一遍", "部分回答", status="stopped")
    return conversation


def test_it_exports_markdown_with_math_and_code_as_source(client, conversation):
    response = client.get(reverse("chat-export-markdown", args=[conversation.pk]))

    text = response.content.decode()
    assert response["Content-Type"].startswith("text/markdown")
    assert "attachment;" in response["Content-Disposition"]
    assert "$$\\alpha = 1$$" in text
    assert "```python\nprint('hi')\n```" in text
    assert "<details>" in text and "The user asks about alpha." in text
    assert "*已停止*" in text


def test_it_leaves_reasoning_out_when_asked(client, conversation):
    response = client.get(
        reverse("chat-export-markdown", args=[conversation.pk]), {"reasoning": "0"}
    )

    text = response.content.decode()
    assert "The user asks about alpha." not in text
    assert "$$\\alpha = 1$$" in text


def test_it_round_trips_a_conversation_through_json(client, researcher, conversation):
    exported = client.get(reverse("chat-export-json", args=[conversation.pk])).content

    upload = io.BytesIO(exported)
    upload.name = "conversation.json"
    response = client.post(reverse("chat-import"), {"file": upload})

    imported = Conversation.objects.exclude(pk=conversation.pk).get(user=researcher)
    assert response.status_code == 302 and response.url == imported.get_absolute_url()
    assert imported.title == conversation.title
    fields = ["role", "content", "reasoning", "status", "created"]
    assert list(imported.messages.values_list(*fields)) == list(
        conversation.messages.values_list(*fields)
    )


INSTRUCTIONS = (
    "Answer as a <b>peer reviewer</b>.\n"
    "<script>alert(1)</script>\n"
    "# Not a heading\n"
    "```\n"
    "Quote code in ``` fences."
)


def test_it_exports_instructions_as_the_text_typed(client, conversation):
    """A Markdown viewer shows the instructions' markup, it does not run it."""
    conversation.preset_prompt = INSTRUCTIONS
    conversation.save()

    text = client.get(
        reverse("chat-export-markdown", args=[conversation.pk])
    ).content.decode()
    viewed = markdown.markdown(text, extensions=["fenced_code"])

    assert "````text\n" + INSTRUCTIONS + "\n````\n" in text
    assert "<script>" not in viewed and "<b>" not in viewed
    assert "&lt;b&gt;peer reviewer&lt;/b&gt;" in viewed
    assert "<h1>Not a heading</h1>" not in viewed
    # The answers after the instructions are outside the block.
    assert "<h2>回答 (deepseek-r1)</h2>" in viewed


def test_it_round_trips_instructions_through_json_unchanged(
    client, researcher, conversation
):
    conversation.preset_prompt = INSTRUCTIONS
    conversation.save()
    exported = client.get(reverse("chat-export-json", args=[conversation.pk])).content

    upload = io.BytesIO(exported)
    upload.name = "conversation.json"
    client.post(reverse("chat-import"), {"file": upload})

    imported = Conversation.objects.exclude(pk=conversation.pk).get(user=researcher)
    assert json.loads(exported)["settings"]["prompt"] == INSTRUCTIONS
    assert imported.preset_prompt == INSTRUCTIONS
    again = client.get(reverse("chat-export-json", args=[imported.pk])).content
    assert json.loads(again)["settings"] == json.loads(exported)["settings"]


def test_it_counts_one_conversation_and_one_token_in_the_singular(
    client, researcher, conversation
):
    client.cookies["django_language"] = "en"
    conversation.max_output_tokens = 1
    conversation.save()

    text = client.get(
        reverse("chat-export-markdown", args=[conversation.pk])
    ).content.decode()
    exported = client.get(reverse("chat-export-json", args=[conversation.pk])).content
    upload = io.BytesIO(exported)
    upload.name = "conversation.json"
    response = client.post(reverse("chat-import"), {"file": upload}, follow=True)

    assert "output limit 1 token." in text
    assert "Imported 1 conversation." in response.content.decode()


def test_it_exports_everything_as_an_archive_and_imports_it_back(
    client, researcher, conversation
):
    second = make_conversation(researcher)
    add_exchange(second, "second question", "second answer")

    archive = client.get(reverse("chat-export-all")).content
    with zipfile.ZipFile(io.BytesIO(archive)) as zip_file:
        names = sorted(zip_file.namelist())
    upload = io.BytesIO(archive)
    upload.name = "all.zip"
    client.post(reverse("chat-import"), {"file": upload})

    assert len(names) == 4 and sum(n.endswith(".json") for n in names) == 2
    assert researcher.conversations.count() == 4
    assert Message.objects.filter(content="second answer").count() == 2


def test_it_exports_only_the_users_own_conversations(client, researcher):
    make_conversation(make_user("outsider"))
    make_conversation(researcher)

    archive = client.get(reverse("chat-export-all")).content

    with zipfile.ZipFile(io.BytesIO(archive)) as zip_file:
        assert len(zip_file.namelist()) == 2


def test_it_brings_an_unfinished_reply_back_as_interrupted(client, researcher):
    data = {
        "format": "research-assistant.conversation",
        "version": 1,
        "title": "t",
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "half", "status": "streaming"},
        ],
    }
    upload = io.BytesIO(json.dumps(data).encode())
    upload.name = "c.json"

    client.post(reverse("chat-import"), {"file": upload})

    reply = Message.objects.get(role="assistant")
    assert (reply.status, reply.content) == ("incomplete", "half")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe not json", "不是从本应用导出的对话"),
        (b'{"format": "other"}', "不是从本应用导出的对话"),
        (
            b'{"format": "research-assistant.conversation", "version": 99}',
            "无法读取的版本",
        ),
        (
            b'{"format": "research-assistant.conversation", "version": 1,'
            b' "messages": [{"role": "system", "content": "x"}]}',
            "无法读取的消息",
        ),
    ],
)
def test_it_explains_a_file_it_cannot_import_and_stores_nothing(
    client, researcher, content, expected
):
    upload = io.BytesIO(content)
    upload.name = "bad.json"

    response = client.post(reverse("chat-import"), {"file": upload}, follow=True)

    assert expected in response.content.decode()
    assert researcher.conversations.count() == 0


def test_it_refuses_an_archive_that_unpacks_too_large(client, researcher):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zip_file:
        zip_file.writestr("big.json", b" " * (MAX_IMPORT_BYTES + 10))
    upload = io.BytesIO(buffer.getvalue())
    upload.name = "bomb.zip"

    response = client.post(reverse("chat-import"), {"file": upload}, follow=True)

    assert "解压后超过" in response.content.decode()
    assert researcher.conversations.count() == 0
