"""Searching one's own messages, in Chinese and English."""

import pytest
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation
from chat.search import query_terms, search_messages, snippet
from tests.factories import add_exchange, make_conversation, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher(client):
    user = make_user()
    client.force_login(user)
    return user


def test_it_finds_a_chinese_word_inside_a_longer_run_of_han_characters(researcher):
    conversation = make_conversation(researcher)
    _q, answer = add_exchange(
        conversation, "什么是自注意力机制？", "自注意力机制把序列映射到序列。"
    )

    found = list(search_messages(researcher, query_terms("注意力")))

    assert answer in found and len(found) == 2


def test_it_matches_english_regardless_of_case_and_requires_every_word(researcher):
    conversation = make_conversation(researcher)
    question, _a = add_exchange(conversation, "Explain the Transformer encoder", "...")
    add_exchange(conversation, "Explain a decoder", "...")

    found = list(search_messages(researcher, query_terms("transformer EXPLAIN")))

    assert found == [question]


def test_it_searches_reasoning_only_when_asked(researcher):
    conversation = make_conversation(researcher)
    _q, answer = add_exchange(
        conversation, "question", "The answer.", reasoning="Think about Lagrangians."
    )

    plain = list(search_messages(researcher, ["lagrangian"]))
    with_reasoning = list(search_messages(researcher, ["lagrangian"], True))

    assert plain == []
    assert with_reasoning == [answer]
    passage, in_reasoning = snippet(answer, ["lagrangian"], True)
    assert in_reasoning is True
    assert "<mark>Lagrangian</mark>" in passage


def test_it_escapes_the_passage_and_marks_only_the_terms(researcher):
    conversation = make_conversation(researcher)
    _q, answer = add_exchange(
        conversation, "q", "before <script>alert(1)</script> attention after"
    )

    passage, _in_reasoning = snippet(answer, ["attention"])

    assert "<script>" not in passage
    assert "&lt;script&gt;" in passage
    assert "<mark>attention</mark>" in passage


def test_it_shows_results_that_open_the_conversation_at_the_message(client, researcher):
    conversation = make_conversation(researcher)
    _q, answer = add_exchange(conversation, "问题", "梯度下降的学习率")

    response = client.get(reverse("chat-search"), {"q": "学习率"})

    page = response.content.decode()
    opens_it = f"{conversation.get_absolute_url()}?show={answer.pk}#message-{answer.pk}"
    assert opens_it in page
    assert "<mark>学习率</mark>" in page


def test_it_never_shows_another_users_or_a_deleted_conversation(client, researcher):
    outsider_chat = make_conversation(make_user("outsider"))
    add_exchange(outsider_chat, "secret grant proposal", "secret answer")
    deleted = make_conversation(researcher)
    add_exchange(deleted, "secret deleted draft", "x")
    Conversation.objects.filter(pk=deleted.pk).update(deleted_at=timezone.now())

    response = client.get(reverse("chat-search"), {"q": "secret"})

    assert response.content.decode().count("data-search-result") == 0


def test_it_searches_in_a_fixed_number_of_queries(
    client, researcher, django_assert_max_num_queries
):
    for index in range(30):
        add_exchange(make_conversation(researcher), f"entropy {index}", "entropy")

    with django_assert_max_num_queries(6):
        response = client.get(reverse("chat-search"), {"q": "entropy"})

    assert response.content.decode().count("data-search-result") == 20


def test_it_bounds_the_query():
    terms = query_terms(" ".join(f"w{i}" for i in range(50)) + " W1 w1")

    assert len(terms) == 8
    assert terms[1] == "w1"
