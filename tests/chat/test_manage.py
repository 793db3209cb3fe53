"""Renaming, pinning, deleting with undo, and the sidebar's date groups."""

import datetime

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from chat.actions import UNDO_WINDOW, purge_deleted
from chat.models import Conversation
from chat.views import group_by_date
from tests.factories import add_exchange, make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher(client):
    user = make_user()
    client.force_login(user)
    return user


def test_it_renames_a_conversation(client, researcher):
    conversation = make_conversation(researcher)

    response = client.post(
        reverse("chat-rename", args=[conversation.pk]), {"title": "  新的\n标题  "}
    )

    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "新的 标题"


def test_it_refuses_an_empty_title_and_keeps_the_old_one(client, researcher):
    conversation = make_conversation(researcher)

    response = client.post(
        reverse("chat-rename", args=[conversation.pk]), {"title": "   "}, follow=True
    )

    conversation.refresh_from_db()
    assert conversation.title == "test"
    assert "标题不能为空" in response.content.decode()


def test_it_pins_without_moving_the_conversation_in_time(client, researcher):
    conversation = make_conversation(researcher)
    updated = conversation.updated

    client.post(reverse("chat-pin", args=[conversation.pk]), {"pinned": "1"})

    conversation.refresh_from_db()
    assert conversation.pinned is True
    assert conversation.updated == updated


def test_it_shows_pinned_conversations_first_then_by_date():
    user = make_user()
    now = timezone.now()
    old = make_conversation(user)
    pinned_old = make_conversation(user)
    recent = make_conversation(user)
    Conversation.objects.filter(pk=old.pk).update(updated=now - datetime.timedelta(60))
    Conversation.objects.filter(pk=pinned_old.pk).update(
        updated=now - datetime.timedelta(90), pinned=True
    )

    groups = group_by_date(user.conversations.in_sidebar_order(), now=now)

    assert [(key, [c.pk for c in items]) for key, _h, items in groups] == [
        ("pinned", [pinned_old.pk]),
        ("today", [recent.pk]),
        ("older", [old.pk]),
    ]


def test_it_hides_a_deleted_conversation_and_offers_to_undo(client, researcher):
    conversation = make_conversation(researcher)
    add_exchange(conversation, "kept question", "kept answer")

    response = client.post(reverse("chat-delete", args=[conversation.pk]), follow=True)

    page = response.content.decode()
    assert reverse("chat-restore", args=[conversation.pk]) in page
    assert conversation.get_absolute_url() not in page.split("flash-messages")[0]
    assert client.get(conversation.get_absolute_url()).status_code == 404

    client.post(reverse("chat-restore", args=[conversation.pk]))

    assert client.get(conversation.get_absolute_url()).status_code == 200
    assert conversation.messages.count() == 2


def test_it_stops_a_reply_still_streaming_when_its_conversation_is_deleted(
    client, researcher
):
    conversation = make_conversation(researcher)
    _question, reply = queue_reply(conversation, "a long question")

    client.post(reverse("chat-delete", args=[conversation.pk]))

    assert cache.get(reply.stop_key)


def test_it_purges_deleted_conversations_after_the_undo_window():
    user = make_user()
    expired = make_conversation(user)
    recent = make_conversation(user)
    kept = make_conversation(user)
    now = timezone.now()
    Conversation.objects.filter(pk=expired.pk).update(
        deleted_at=now - UNDO_WINDOW - datetime.timedelta(minutes=1)
    )
    Conversation.objects.filter(pk=recent.pk).update(deleted_at=now)

    purge_deleted(now=now)

    assert set(Conversation.objects.values_list("pk", flat=True)) == {
        recent.pk,
        kept.pk,
    }


def test_it_lets_no_outsider_rename_pin_delete_restore_or_export(client):
    owner = make_user("owner")
    conversation = make_conversation(owner)
    deleted = make_conversation(owner)
    Conversation.objects.filter(pk=deleted.pk).update(deleted_at=timezone.now())
    client.force_login(make_user("outsider"))

    posts = [
        client.post(reverse("chat-rename", args=[conversation.pk]), {"title": "x"}),
        client.post(reverse("chat-pin", args=[conversation.pk]), {"pinned": "1"}),
        client.post(reverse("chat-delete", args=[conversation.pk])),
        client.post(reverse("chat-restore", args=[deleted.pk])),
    ]
    gets = [
        client.get(reverse("chat-export-markdown", args=[conversation.pk])),
        client.get(reverse("chat-export-json", args=[conversation.pk])),
    ]

    assert [r.status_code for r in posts + gets] == [404] * 6
    conversation.refresh_from_db()
    assert (conversation.title, conversation.pinned, conversation.deleted_at) == (
        "test",
        False,
        None,
    )


def test_it_refuses_changes_by_get(client, researcher):
    conversation = make_conversation(researcher)

    response = client.get(reverse("chat-delete", args=[conversation.pk]))

    assert response.status_code == 405
    conversation.refresh_from_db()
    assert conversation.deleted_at is None


def test_it_lists_thousands_of_conversations_a_page_at_a_time(
    client, researcher, django_assert_max_num_queries
):
    Conversation.objects.bulk_create(
        Conversation(user=researcher, title=f"c{i}") for i in range(250)
    )

    with django_assert_max_num_queries(6):
        response = client.get(reverse("chat-conversations"), {"page": 2})

    assert response.status_code == 200
    assert response.content.decode().count("data-conversation-id=") == 100
