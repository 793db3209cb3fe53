"""Where a chat reply stands in its model's queue before its worker says.

The worker writing a reply reports the place its admission ticket holds
(assistant.admission), but only once it has started the reply's task, and on
a busy host, or with every worker thread taken, that can be seconds after the
question was posted. Until then the web process, which holds the page's
socket, tells the page itself: once with the question (expected_place) and
then every PLACE_INTERVAL (place_of_reply, asked by chat.consumers) until the
worker's first event. Both read the model's open replies from the database:
those being written hold their slots, the queued ones take what is left in
the order they were posted, and the rest wait.

These are estimates. Fair order between users, and batch work or API
requests in the same pool, can move a reply ahead of the places counted
here; the worker's own reports then replace them.
"""

import collections
import threading
import time
from contextlib import contextmanager
from typing import NamedTuple

from assistant import quotas
from assistant.admission import (
    INTERACTIVE,
    ON_WAIT_INTERVAL,
    QueuePlace,
    clamp_cost,
    get_admission,
)
from assistant.backends import connection_for_profile
from assistant.completion import pool_name
from chat.models import Message

# The page hears from the web process as often as it would from the worker.
PLACE_INTERVAL = ON_WAIT_INTERVAL
# Every page waiting on the same model asks at the same pace; one read of the
# model's open replies serves all of them for this long.
SNAPSHOT_SECONDS = 0.25
# place_of_reply's answer for a reply that is no longer waiting to start.
NOT_QUEUED = object()

STREAMING = Message.Status.STREAMING
OPEN_STATUSES = [Message.Status.QUEUED, Message.Status.STREAMING]


class Posting:
    """A question to `model` that a thread of this process is storing.

    reply_pk is set once its reply is inserted, before the commit that
    shows the reply to other threads.
    """

    def __init__(self, model):
        self.model = model
        self.reply_pk = None


# The questions this process's threads are storing at this moment, by model:
# until they commit, the database cannot show them to each other.
_postings = collections.defaultdict(set)
_postings_lock = threading.Lock()


@contextmanager
def posting_to(model):
    """Around the estimate and the storing of a question to `model`; yields
    its Posting, for expected_place and actions.post_question.

    In a burst several threads estimate at once, and each would otherwise
    be told it goes straight in by replies that do not exist yet. Posts in
    other processes still race; the estimates that follow (place_of_reply)
    and the worker's own reports correct it.
    """
    posting = Posting(model)
    with _postings_lock:
        _postings[model].add(posting)
    try:
        yield posting
    finally:
        with _postings_lock:
            _postings[model].discard(posting)
            if not _postings[model]:
                del _postings[model]


def _others_posting(posting):
    with _postings_lock:
        return [
            other for other in _postings.get(posting.model, ()) if other is not posting
        ]


def expected_place(user_id, profile, posting=None):
    """Where a reply to model `profile` posted now would stand in its queue;
    None if it fits.

    Asked just before the reply is posted, so that neither the reply nor
    its worker's ticket is counted ahead of itself; replies being posted
    beside it (`posting`, from posting_to) are counted ahead.
    """
    pool = pool_name(profile.name, connection_for_profile(profile))
    place = get_admission().peek(pool, user_id, INTERACTIVE, profile.concurrency_limit)
    return place or place_behind_open_replies(profile.name, profile, posting)


def place_behind_open_replies(model, profile, posting=None):
    """Where a new reply stands behind the model's replies posted before it.

    When many people ask at once, the workers of their replies have not
    queued tickets yet, so the admission queue looks empty and peek() says
    every reply goes straight in; the open replies say otherwise. None when
    it fits.
    """
    capacity = profile.concurrency_limit
    if capacity is None:
        return None

    others_posting = _others_posting(posting) if posting else []
    stored = _read_open_replies(model)
    stored_pks = {row.pk for row in stored}
    # Read after the query: a post that committed before it had set its
    # reply_pk before committing, so it is not counted twice.
    unseen = sum(1 for other in others_posting if other.reply_pk not in stored_pks)
    ahead = [(row.status, row.prompt_estimate) for row in stored]
    ahead += [(Message.Status.QUEUED, None)] * unseen
    return _place_behind(ahead, profile, newcomer_estimate=None)


def place_of_reply(reply_pk, profile):
    """Where the posted reply `reply_pk` stands now, as its worker would say.

    NOT_QUEUED once the reply is no longer waiting to start (it streams,
    ended, or is gone); None while it would go straight in; else its
    QueuePlace behind the replies being written and those queued before it.
    """
    capacity = profile.concurrency_limit
    open_replies = _open_replies(profile.name)
    own = _row_of(reply_pk, open_replies)
    if own is None:
        # A read from before the reply was stored may still be the
        # snapshot; only a read of now says it is gone.
        open_replies = _open_replies(profile.name, fresh=True)
        own = _row_of(reply_pk, open_replies)
    if own is None or own.status == STREAMING:
        return NOT_QUEUED
    if capacity is None:
        return None

    # Replies being written hold their slots whenever they were posted; of
    # the queued ones only those posted earlier go first.
    ahead = [
        (row.status, row.prompt_estimate)
        for row in open_replies
        if row.status == STREAMING or row.pk < reply_pk
    ]
    place = _place_behind(ahead, profile, newcomer_estimate=own.prompt_estimate)
    return place or _place_beside_other_work(own, profile)


def _place_beside_other_work(own, profile):
    """The admission queue's place for a reply no chat reply holds back.

    Polish chunks, conversions and API requests hold slots of the same pool
    without any chat reply being open; the admission queue knows them, and
    how long its slots are held, so it gives a wait too. It places the reply
    as if it queued now, which is right while no other reply waits.
    """
    pool = pool_name(profile.name, connection_for_profile(profile))
    return get_admission().peek(
        pool,
        own.user_id,
        INTERACTIVE,
        profile.concurrency_limit,
        cost=profile.admission_cost(own.prompt_estimate or 0),
    )


def _row_of(reply_pk, open_replies):
    return next((row for row in open_replies if row.pk == reply_pk), None)


def _place_behind(open_replies, profile, newcomer_estimate):
    """The QueuePlace of a newcomer behind `open_replies`, None if it fits.

    open_replies: (status, prompt estimate) in the order they were posted.
    The ones being written hold their slots; the queued ones are admitted
    first come, first served, and none overtakes a waiting one ahead of it,
    as the admission queue does within one priority.
    """
    capacity = profile.concurrency_limit

    def cost(prompt_estimate):
        return clamp_cost(profile.admission_cost(prompt_estimate or 0), capacity)

    used = sum(cost(e) for status, e in open_replies if status == STREAMING)
    waiting = []
    for status, estimate in open_replies:
        if status == STREAMING:
            continue
        if not waiting and used + cost(estimate) <= capacity:
            used += cost(estimate)
        else:
            waiting.append(cost(estimate))

    if not waiting and used + cost(newcomer_estimate) <= capacity:
        return None
    return QueuePlace(position=len(waiting) + 1, ahead_cost=sum(waiting), eta=None)


class OpenReply(NamedTuple):
    pk: int
    status: str
    prompt_estimate: int | None
    user_id: int


def _read_open_replies(model):
    """The model's open replies as OpenReply rows, oldest first.

    A reply left open by a worker that died stops counting once it is older
    than any request could be.
    """
    rows = (
        Message.objects.filter(
            model=model,
            role=Message.Role.ASSISTANT,
            status__in=OPEN_STATUSES,
            created__gte=quotas.in_flight_since(),
        )
        .order_by("pk")
        .values_list("pk", "status", "prompt_estimate", "conversation__user_id")
    )
    return [OpenReply(*row) for row in rows]


# model -> (monotonic time the read began, its rows)
_snapshots = {}
_snapshots_lock = threading.Lock()


def _open_replies(model, fresh=False):
    """_read_open_replies, read again at most every SNAPSHOT_SECONDS.

    Sixty pages waiting on one model ask twice a second each; without this
    every one of them would read the same rows. A snapshot is as old as the
    moment its read began, and a slow read never replaces a newer one.
    """
    if not fresh:
        with _snapshots_lock:
            taken = _snapshots.get(model)
        if taken is not None and time.monotonic() - taken[0] < SNAPSHOT_SECONDS:
            return taken[1]

    began = time.monotonic()
    rows = _read_open_replies(model)
    with _snapshots_lock:
        taken = _snapshots.get(model)
        if taken is None or taken[0] < began:
            _snapshots[model] = (began, rows)
    return rows


def expected_queue_data(place):
    """A QueuePlace as the page shows it with the question."""
    return {"position": place.position, "eta": place.eta}
