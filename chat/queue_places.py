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
    stored_pks = {pk for pk, _, _ in stored}
    # Read after the query: a post that committed before it had set its
    # reply_pk before committing, so it is not counted twice.
    unseen = sum(1 for other in others_posting if other.reply_pk not in stored_pks)
    ahead = [(status, estimate) for _, status, estimate in stored]
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
    own = next((row for row in open_replies if row[0] == reply_pk), None)
    if own is None or own[1] == STREAMING:
        return NOT_QUEUED
    if capacity is None:
        return None

    # Replies being written hold their slots whenever they were posted; of
    # the queued ones only those posted earlier go first.
    ahead = [
        (status, estimate)
        for pk, status, estimate in open_replies
        if status == STREAMING or pk < reply_pk
    ]
    return _place_behind(ahead, profile, newcomer_estimate=own[2])


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


def _read_open_replies(model):
    """(pk, status, prompt estimate) of the model's open replies, oldest first.

    A reply left open by a worker that died stops counting once it is older
    than any request could be.
    """
    return list(
        Message.objects.filter(
            model=model,
            role=Message.Role.ASSISTANT,
            status__in=OPEN_STATUSES,
            created__gte=quotas.in_flight_since(),
        )
        .order_by("pk")
        .values_list("pk", "status", "prompt_estimate")
    )


# model -> (monotonic time of the read, its rows)
_snapshots = {}
_snapshots_lock = threading.Lock()


def _open_replies(model):
    """_read_open_replies, read again at most every SNAPSHOT_SECONDS.

    Sixty pages waiting on one model ask twice a second each; without this
    every one of them would read the same rows.
    """
    with _snapshots_lock:
        taken = _snapshots.get(model)
    if taken is not None and time.monotonic() - taken[0] < SNAPSHOT_SECONDS:
        return taken[1]

    rows = _read_open_replies(model)
    with _snapshots_lock:
        _snapshots[model] = (time.monotonic(), rows)
    return rows


def expected_queue_data(place):
    """A QueuePlace as the page shows it with the question."""
    return {"position": place.position, "eta": place.eta}
