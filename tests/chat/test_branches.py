"""Versions of a turn: regenerated answers, edited questions, the path on show."""

import json

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.urls import reverse

from chat import actions, exports, titling, tree
from chat.models import Attachment, Conversation, Message
from chat.prompt import build_messages, trim_to_fit
from tests.factories import add_exchange, make_conversation, make_user

pytestmark = pytest.mark.django_db

MODEL = "deepseek-r1"


@pytest.fixture
def researcher(client):
    user = make_user()
    client.force_login(user)
    return user


def finish(reply, content):
    """A queued reply as the worker leaves it once the model has answered."""
    reply.content = content
    reply.status = Message.Status.STOP
    reply.save(update_fields=["content", "status"])
    return reply


def shown(conversation):
    conversation.refresh_from_db()
    return [m.content for m in tree.active_path(conversation)]


def test_it_keeps_the_old_answer_beside_a_regenerated_one(researcher):
    conversation = make_conversation(researcher)
    question, old = add_exchange(conversation, "what is attention?", "old answer")

    new = actions.regenerate_reply(old, MODEL)

    assert new.parent == question and new.status == Message.Status.QUEUED
    assert Message.objects.filter(pk=old.pk, content="old answer").exists()
    conversation.refresh_from_db()
    assert conversation.current_leaf == new
    branches = tree.Tree.of(conversation)
    assert branches.branch_data(new) == {
        "index": 2,
        "count": 2,
        "previous": old.pk,
        "next": None,
    }
    assert branches.branch_data(question)["count"] == 1


def test_it_edits_a_question_into_a_branch_and_keeps_the_old_one_whole(
    researcher,
):
    conversation = make_conversation(researcher)
    first, _a1 = add_exchange(conversation, "q1", "a1")
    add_exchange(conversation, "q2", "a2")

    edited, reply = actions.edit_question(first, "q1 edited", MODEL)
    finish(reply, "a1 for the edit")

    assert edited.parent is None and reply.parent == edited
    assert shown(conversation) == ["q1 edited", "a1 for the edit"]

    actions.show_branch(conversation, first)
    assert shown(conversation) == ["q1", "a1", "q2", "a2"]


def test_it_sends_the_files_of_an_edited_question_with_the_edit(researcher):
    conversation = make_conversation(researcher)
    question, _a = add_exchange(conversation, "summarise the file", "done")
    Attachment.objects.create(
        user=researcher,
        message=question,
        name="notes.md",
        kind="markdown",
        text="the file's own words",
        size_bytes=20,
    )

    edited, reply = actions.edit_question(question, "summarise it briefly", MODEL)
    asked = build_messages(conversation, reply, system_prompt="")[-1]["content"]

    assert [a.name for a in edited.attachments.all()] == ["notes.md"]
    assert asked.startswith("summarise it briefly")
    assert "the file's own words" in asked
    assert question.attachments.count() == 1


def test_it_shows_a_switched_branch_down_to_its_newest_end(researcher):
    conversation = make_conversation(researcher)
    question, old = add_exchange(conversation, "q", "old")
    new = finish(actions.regenerate_reply(old, MODEL), "new")
    _q2, reply = actions.post_question(conversation, "follow-up", MODEL)
    finish(reply, "follow-up answer")

    actions.show_branch(conversation, old)
    assert shown(conversation) == ["q", "old"]

    actions.show_branch(conversation, new)
    assert shown(conversation) == ["q", "new", "follow-up", "follow-up answer"]


def test_it_comes_back_to_the_version_chosen_under_a_question(researcher):
    conversation = make_conversation(researcher)
    first, old = add_exchange(conversation, "q", "old")
    finish(actions.regenerate_reply(old, MODEL), "new")
    actions.show_branch(conversation, old)
    _edited, reply = actions.edit_question(first, "q edited", MODEL)
    finish(reply, "for the edit")

    actions.show_branch(conversation, first)

    assert shown(conversation) == ["q", "old"]


def test_it_asks_the_model_about_the_branch_of_the_reply_only(researcher):
    conversation = make_conversation(researcher)
    _q, old = add_exchange(conversation, "q1", "the old answer")
    finish(actions.regenerate_reply(old, MODEL), "the new answer")

    _q2, reply = actions.post_question(conversation, "q2", MODEL)
    sent = build_messages(conversation, reply, system_prompt="")

    assert [m["content"] for m in sent] == ["q1", "the new answer", "q2"]


def test_it_trims_the_oldest_turns_of_the_branch_to_fit(researcher):
    conversation = make_conversation(researcher)
    add_exchange(conversation, "old question " * 200, "old answer " * 200)
    _q, other = add_exchange(conversation, "q2", "other branch " * 200)
    finish(actions.regenerate_reply(other, MODEL), "shown answer")
    _q3, reply = actions.post_question(conversation, "newest", MODEL)

    messages = build_messages(conversation, reply, system_prompt="sys")
    trimmed, dropped = trim_to_fit(messages, limit=40)

    assert dropped == 1
    assert [m["content"] for m in trimmed] == ["sys", "q2", "shown answer", "newest"]


def test_it_adds_a_question_after_the_message_the_page_shows(researcher):
    conversation = make_conversation(researcher)
    _q, old = add_exchange(conversation, "q", "old")
    new = finish(actions.regenerate_reply(old, MODEL), "new")

    after_new, _r = actions.post_question(conversation, "after the shown one", MODEL)
    after_old, _r = actions.post_question(
        conversation, "from a stale page", MODEL, (), old
    )

    assert after_new.parent == new
    assert after_old.parent == old


def test_it_opens_the_branch_of_a_search_hit(client, researcher):
    conversation = make_conversation(researcher)
    _q, old = add_exchange(conversation, "q", "梯度下降 old answer")
    finish(actions.regenerate_reply(old, MODEL), "new answer")

    found = client.get(reverse("chat-search"), {"q": "梯度下降"}).content.decode()
    page = client.get(conversation.get_absolute_url(), {"show": old.pk})

    assert f"?show={old.pk}#message-{old.pk}" in found
    page_data = page.context["page_data"]
    assert [m["content"] for m in page_data["messages"]] == ["q", "梯度下降 old answer"]
    assert page_data["messages"][1]["branch"]["index"] == 1
    assert shown(conversation) == ["q", "梯度下降 old answer"]


def test_it_never_opens_a_branch_of_another_users_conversation(client, researcher):
    owner = make_user("owner")
    conversation = make_conversation(owner)
    _q, old = add_exchange(conversation, "q", "old")
    finish(actions.regenerate_reply(old, MODEL), "new")

    response = client.get(conversation.get_absolute_url(), {"show": old.pk})

    assert response.status_code == 404
    assert shown(conversation) == ["q", "new"]


def test_it_shares_and_exports_as_markdown_the_branch_on_show(client, researcher):
    conversation = make_conversation(researcher)
    _q, old = add_exchange(conversation, "the question", "hidden answer")
    finish(actions.regenerate_reply(old, MODEL), "shown answer")
    link = actions.share_conversation(conversation)

    shared = client.get(link.get_absolute_url()).content.decode()
    markdown = exports.conversation_markdown(conversation)

    for text in (shared, markdown):
        assert "the question" in text and "shown answer" in text
        assert "hidden answer" not in text


def test_it_restores_every_branch_and_the_one_on_show_from_json(researcher):
    conversation = make_conversation(researcher)
    first, old = add_exchange(conversation, "q1", "old")
    finish(actions.regenerate_reply(old, MODEL), "new")
    _e, reply = actions.edit_question(first, "q1 edited", MODEL)
    finish(reply, "for the edit")
    actions.show_branch(conversation, old)
    data = exports.conversation_json(conversation)

    items = exports.read_import("c.json", data.encode())
    [copy] = exports.import_conversations(researcher, items)

    def shape(conv):
        return sorted(
            (m.content, m.parent.content if m.parent else None)
            for m in conv.messages.select_related("parent")
        )

    assert shape(copy) == shape(conversation)
    assert shown(copy) == ["q1", "old"]
    # Away to the edit and back: the answer chosen under q1 comes back too.
    copied = {m.content: m for m in copy.messages.all()}
    actions.show_branch(copy, copied["q1 edited"])
    actions.show_branch(copy, copied["q1"])
    assert shown(copy) == ["q1", "old"]


def test_it_imports_a_file_from_before_branches_as_one_chain(researcher):
    conversation = make_conversation(researcher)
    add_exchange(conversation, "q1", "a1")
    add_exchange(conversation, "q2", "a2")
    data = exports.conversation_data(conversation)
    for message in data["messages"]:
        del message["parent"]
    del data["shown_leaf"]

    items = exports.read_import("old.json", json.dumps(data).encode())
    [copy] = exports.import_conversations(researcher, items)

    assert shown(copy) == ["q1", "a1", "q2", "a2"]
    assert copy.messages.filter(parent__isnull=True).count() == 1


@pytest.mark.parametrize("parent", [0, 5, -1, "0", True])
def test_it_refuses_a_file_whose_parents_do_not_come_first(researcher, parent):
    conversation = make_conversation(researcher)
    add_exchange(conversation, "q1", "a1")
    data = exports.conversation_data(conversation)
    data["messages"][0]["parent"] = parent

    with pytest.raises(exports.ImportProblem):
        exports.read_import("bad.json", json.dumps(data).encode())


def test_it_titles_the_first_exchange_of_the_branch_on_show(researcher):
    """While the first words are the title, e.g. because the first answer
    could not be titled, a first answer written again can be."""
    conversation = make_conversation(researcher)
    _q, old = add_exchange(conversation, "q", "old")
    new = actions.regenerate_reply(old, MODEL)
    conversation.refresh_from_db()
    assert not titling.needs_title(conversation)

    finish(new, "new")
    assert titling.needs_title(conversation)

    actions.post_question(conversation, "q2", MODEL, (), new)
    conversation.refresh_from_db()
    assert not titling.needs_title(conversation)


def _chat_migration(loader, suffix):
    return next(
        key
        for key in loader.graph.nodes
        if key[0] == "chat" and key[1].endswith(suffix)
    )


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_a_linear_conversation_into_one_chain():
    loader = MigrationLoader(connection)
    chained = _chat_migration(loader, "_linear_conversations_as_chains")
    tree_added = _chat_migration(loader, "_message_tree")
    [before] = [p for p in loader.graph.node_map[tree_added].parents if p[0] == "chat"]
    latest = loader.graph.leaf_nodes()

    executor = MigrationExecutor(connection)
    executor.migrate([before.key])
    old_apps = executor.loader.project_state([before.key]).apps
    user = old_apps.get_model("auth", "User").objects.create(username="old")
    old_conversation = old_apps.get_model("chat", "Conversation").objects.create(
        user=user, title="old"
    )
    OldMessage = old_apps.get_model("chat", "Message")
    for role, content in [("user", "q1"), ("assistant", "a1"), ("user", "q2")]:
        OldMessage.objects.create(
            conversation=old_conversation, role=role, content=content
        )
    old_apps.get_model("chat", "Conversation").objects.create(user=user, title="empty")

    try:
        executor = MigrationExecutor(connection)
        executor.migrate([chained])
        new_apps = executor.loader.project_state([chained]).apps
        Message = new_apps.get_model("chat", "Message")
        chain = list(
            Message.objects.filter(conversation_id=old_conversation.pk).order_by("id")
        )
        leaf_id = (
            new_apps.get_model("chat", "Conversation")
            .objects.get(pk=old_conversation.pk)
            .current_leaf_id
        )
    finally:
        MigrationExecutor(connection).migrate(latest)

    assert [m.parent_id for m in chain] == [None, chain[0].pk, chain[1].pk]
    assert all(m.shown_at == m.created for m in chain)
    assert leaf_id == chain[2].pk
    migrated = Conversation.objects.get(pk=old_conversation.pk)
    assert [m.content for m in tree.active_path(migrated)] == ["q1", "a1", "q2"]


def test_walking_a_long_conversation_costs_the_same_queries_as_a_short_one(
    researcher, django_assert_num_queries
):
    """The path and the prompt are read in a fixed number of queries."""
    conversation = make_conversation(researcher, MODEL)
    for number in range(30):
        add_exchange(conversation, f"question {number}", f"answer {number}")
    _question, reply = actions.post_question(conversation, "one more", MODEL)

    with django_assert_num_queries(1):
        tree.last_message(conversation)
    with django_assert_num_queries(3):
        # The tree, the path's messages, their attachments.
        build_messages(conversation, reply, system_prompt="")
