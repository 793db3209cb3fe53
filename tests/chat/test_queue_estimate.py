"""The place a reply may expect in its model's queue, before its worker says:
shown as it is posted, then followed until the worker reports."""

import threading

import pytest

from assistant.models import ModelProfile
from chat import actions, queue_places
from chat.models import Message
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db

MODEL = "deepseek-v3"


@pytest.fixture(autouse=True)
def fresh_snapshots():
    """Each test reads the open replies it made, not a previous test's."""
    queue_places._snapshots.clear()
    yield
    queue_places._snapshots.clear()


@pytest.fixture
def one_slot(model_api):
    profile = ModelProfile.ensure(MODEL)
    profile.concurrency_limit = 1
    profile.save()
    return profile


def test_a_reply_to_a_free_model_expects_no_queue(one_slot):
    assert queue_places.expected_place(make_user().pk, one_slot) is None


def test_a_reply_waits_behind_those_posted_before_it(one_slot):
    colleague = make_user("colleague")
    for question in ("first", "second"):
        queue_reply(make_conversation(colleague, MODEL), question)

    place = queue_places.expected_place(make_user().pk, one_slot)

    # The first takes the slot; the second waits, then this one.
    assert (place.position, place.ahead_cost) == (2, 1)


def test_it_counts_questions_being_posted_beside_it_ahead(one_slot):
    """A burst: the other threads' replies are not in the database yet."""
    user_id = make_user().pk
    with queue_places.posting_to(MODEL), queue_places.posting_to(MODEL):
        with queue_places.posting_to(MODEL) as own:
            place = queue_places.expected_place(user_id, one_slot, own)

    # One of the two takes the slot, the other waits ahead of this one.
    assert place.position == 2


def test_a_question_stored_beside_it_is_counted_once(one_slot):
    """Stored but its block not yet left: in the database and still posting."""
    colleague = make_user("colleague")
    with queue_places.posting_to(MODEL) as beside:
        _, stored = actions.post_question(
            make_conversation(colleague, MODEL), "first", MODEL, posting=beside
        )
        with queue_places.posting_to(MODEL) as own:
            place = queue_places.expected_place(make_user().pk, one_slot, own)

    assert beside.reply_pk == stored.pk
    # The stored reply holds the slot; nothing else is ahead.
    assert (place.position, place.ahead_cost) == (1, 0)


def test_posting_to_keeps_the_posts_in_flight_per_model():
    inside = threading.Event()
    leave = threading.Event()
    seen = {}

    def post_slowly():
        with queue_places.posting_to(MODEL) as posting:
            seen["first"] = len(queue_places._others_posting(posting))
            inside.set()
            leave.wait(5)

    poster = threading.Thread(target=post_slowly)
    poster.start()
    inside.wait(5)
    with (
        queue_places.posting_to(MODEL) as own,
        queue_places.posting_to("other") as apart,
    ):
        seen["beside"] = len(queue_places._others_posting(own))
        seen["other model"] = len(queue_places._others_posting(apart))
    leave.set()
    poster.join(5)
    with queue_places.posting_to(MODEL) as own:
        seen["after"] = len(queue_places._others_posting(own))

    assert seen == {"first": 0, "beside": 1, "other model": 0, "after": 0}


def queued(user, question):
    """A reply to `question` posted by `user`, its worker not started."""
    _question, reply = queue_reply(make_conversation(user, MODEL), question)
    return reply


def start_writing(reply):
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STREAMING)


def test_a_posted_reply_waits_behind_the_replies_posted_before_it(one_slot):
    colleague = make_user("colleague")
    writing = queued(colleague, "being answered")
    start_writing(writing)
    queued(colleague, "asked before")
    own = queued(make_user(), "mine")
    queued(colleague, "asked after")

    place = queue_places.place_of_reply(own.pk, one_slot)

    # The slot is taken; the earlier question goes first, the later one not.
    assert (place.position, place.ahead_cost) == (2, 1)


def test_a_posted_reply_moves_up_as_the_replies_ahead_start(one_slot):
    colleague = make_user("colleague")
    first = queued(colleague, "first")
    own = queued(make_user(), "mine")
    start_writing(first)
    assert queue_places.place_of_reply(own.pk, one_slot).position == 1

    Message.objects.filter(pk=first.pk).update(status=Message.Status.STOP)
    queue_places._snapshots.clear()

    # The slot is free: it goes straight in once its worker starts.
    assert queue_places.place_of_reply(own.pk, one_slot) is None


def test_a_reply_that_started_or_ended_is_no_longer_queued(one_slot):
    own = queued(make_user(), "mine")
    start_writing(own)
    assert queue_places.place_of_reply(own.pk, one_slot) is queue_places.NOT_QUEUED

    Message.objects.filter(pk=own.pk).update(status=Message.Status.STOP)
    queue_places._snapshots.clear()
    assert queue_places.place_of_reply(own.pk, one_slot) is queue_places.NOT_QUEUED


def test_a_long_prompt_ahead_takes_the_room_of_several(one_slot):
    """A prompt past long_prompt_tokens costs long_prompt_cost units."""
    one_slot.concurrency_limit = 4
    one_slot.long_prompt_tokens = 4000
    one_slot.long_prompt_cost = 4
    one_slot.save()
    colleague = make_user("colleague")
    long_one = queued(colleague, "long")
    Message.objects.filter(pk=long_one.pk).update(
        status=Message.Status.STREAMING, prompt_estimate=5000
    )
    own = queued(make_user(), "mine")

    place = queue_places.place_of_reply(own.pk, one_slot)

    assert place is not None and place.position == 1


def test_the_open_replies_are_read_once_for_every_page_asking_together(
    one_slot, django_assert_num_queries, monkeypatch
):
    # However slowly this machine runs the loop below.
    monkeypatch.setattr(queue_places, "SNAPSHOT_SECONDS", 60)
    own = queued(make_user(), "mine")
    with django_assert_num_queries(1):
        for _page in range(20):
            queue_places.place_of_reply(own.pk, one_slot)


def test_a_reply_stored_after_the_snapshot_is_still_followed(one_slot, monkeypatch):
    """A read from before the reply's commit is not taken for its end."""
    monkeypatch.setattr(queue_places, "SNAPSHOT_SECONDS", 60)
    colleague = make_user("colleague")
    start_writing(queued(colleague, "being answered"))
    queue_places._open_replies(MODEL)
    own = queued(make_user(), "mine")

    place = queue_places.place_of_reply(own.pk, one_slot)

    assert place is not queue_places.NOT_QUEUED
    assert (place.position, place.ahead_cost) == (1, 0)


def test_a_slot_held_by_other_work_is_counted_with_its_wait(one_slot):
    """No chat reply is open, but a polish chunk holds the one slot."""
    from assistant.admission import BATCH, get_admission
    from assistant.backends import connection_for_profile
    from assistant.completion import pool_name

    admission = get_admission()
    pool = pool_name(MODEL, connection_for_profile(one_slot))
    chunk = admission.try_admit(admission.enqueue(pool, "author", BATCH), 1)
    assert chunk is not None
    try:
        own = queued(make_user(), "mine")
        place = queue_places.place_of_reply(own.pk, one_slot)
    finally:
        chunk.release()

    assert (place.position, place.ahead_cost) == (1, 0)
