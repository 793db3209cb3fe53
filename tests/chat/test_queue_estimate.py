"""The place a reply may expect in its model's queue, shown as it is posted."""

import threading

import pytest

from assistant.models import ModelProfile
from chat import actions
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db

MODEL = "deepseek-v3"


@pytest.fixture
def one_slot(model_api):
    profile = ModelProfile.ensure(MODEL)
    profile.concurrency_limit = 1
    profile.save()
    return profile


def test_a_reply_to_a_free_model_expects_no_queue(one_slot):
    assert actions.expected_place(make_user().pk, one_slot) is None


def test_a_reply_waits_behind_those_posted_before_it(one_slot):
    colleague = make_user("colleague")
    for question in ("first", "second"):
        queue_reply(make_conversation(colleague, MODEL), question)

    place = actions.expected_place(make_user().pk, one_slot)

    # The first takes the slot; the second waits, then this one.
    assert (place.position, place.ahead_cost) == (2, 1)


def test_it_counts_questions_being_posted_beside_it_ahead(one_slot):
    """A burst: the other threads' replies are not in the database yet."""
    user_id = make_user().pk
    with actions.posting_to(MODEL), actions.posting_to(MODEL):
        with actions.posting_to(MODEL) as own:
            place = actions.expected_place(user_id, one_slot, own)

    # One of the two takes the slot, the other waits ahead of this one.
    assert place.position == 2


def test_a_question_stored_beside_it_is_counted_once(one_slot):
    """Stored but its block not yet left: in the database and still posting."""
    colleague = make_user("colleague")
    with actions.posting_to(MODEL) as beside:
        _, stored = actions.post_question(
            make_conversation(colleague, MODEL), "first", MODEL, posting=beside
        )
        with actions.posting_to(MODEL) as own:
            place = actions.expected_place(make_user().pk, one_slot, own)

    assert beside.reply_pk == stored.pk
    # The stored reply holds the slot; nothing else is ahead.
    assert (place.position, place.ahead_cost) == (1, 0)


def test_posting_to_keeps_the_posts_in_flight_per_model():
    inside = threading.Event()
    leave = threading.Event()
    seen = {}

    def post_slowly():
        with actions.posting_to(MODEL) as posting:
            seen["first"] = len(actions._others_posting(posting))
            inside.set()
            leave.wait(5)

    poster = threading.Thread(target=post_slowly)
    poster.start()
    inside.wait(5)
    with actions.posting_to(MODEL) as own, actions.posting_to("other") as apart:
        seen["beside"] = len(actions._others_posting(own))
        seen["other model"] = len(actions._others_posting(apart))
    leave.set()
    poster.join(5)
    with actions.posting_to(MODEL) as own:
        seen["after"] = len(actions._others_posting(own))

    assert seen == {"first": 0, "beside": 1, "other model": 0, "after": 0}
