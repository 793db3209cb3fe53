"""Read-only links to a conversation, for signed-in colleagues."""

import pytest
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation, SharedLink
from tests.factories import add_exchange, make_conversation, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner():
    return make_user("owner")


@pytest.fixture
def shared(owner):
    conversation = make_conversation(owner)
    add_exchange(
        conversation,
        "<script>alert('q')</script> question",
        "Answer with $x^2$ <img src=x onerror=alert(1)>",
        reasoning="private thoughts",
    )
    return conversation


def test_it_makes_one_link_and_shows_it_to_the_owner(client, owner, shared):
    client.force_login(owner)

    client.post(reverse("chat-share", args=[shared.pk]))
    client.post(reverse("chat-share", args=[shared.pk]))
    page = client.get(shared.get_absolute_url()).content.decode()

    link = SharedLink.objects.get(conversation=shared)
    assert link.get_absolute_url() in page


def test_it_lets_a_signed_in_colleague_read_but_not_write(client, owner, shared):
    link = SharedLink.objects.create(conversation=shared)
    client.force_login(make_user("colleague"))

    response = client.get(link.get_absolute_url())

    page = response.content.decode()
    assert response.status_code == 200
    assert "&lt;script&gt;alert(&#x27;q&#x27;)&lt;/script&gt;" in page
    assert "onerror" not in page
    assert 'class="math' in page or "math-inline" in page
    assert client.get(shared.get_absolute_url()).status_code == 404
    assert client.post(reverse("chat-unshare", args=[shared.pk])).status_code == 404
    assert client.post(reverse("chat-share", args=[shared.pk])).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, shared):
    link = SharedLink.objects.create(conversation=shared)

    response = client.get(link.get_absolute_url())

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_it_closes_a_revoked_link_or_one_to_a_deleted_conversation(
    client, owner, shared
):
    link = SharedLink.objects.create(conversation=shared)
    client.force_login(owner)

    client.post(reverse("chat-unshare", args=[shared.pk]))
    revoked = client.get(link.get_absolute_url())
    second = SharedLink.objects.create(conversation=shared)
    Conversation.objects.filter(pk=shared.pk).update(deleted_at=timezone.now())
    deleted = client.get(second.get_absolute_url())

    assert revoked.status_code == 404
    assert deleted.status_code == 404


def test_it_gives_nothing_for_a_guessed_token(client, shared):
    client.force_login(make_user("outsider"))

    assert client.get(reverse("chat-shared", args=["guess"])).status_code == 404
