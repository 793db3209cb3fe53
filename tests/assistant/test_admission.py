"""Admission control, on real Redis and in memory, with the same tests."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from assistant.admission import (
    Cancelled,
    MemoryAdmission,
    RedisAdmission,
    TimedOut,
    UnknownTicket,
    estimate_eta,
)

REPO_DIR = Path(__file__).resolve().parents[2]
REDIS_TEST_URL = os.environ.get("ADMISSION_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
POOL = "r1-671b"


def _redis_or_skip():
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis not reachable at {REDIS_TEST_URL}: {error}")
    return client


@pytest.fixture
def redis_prefix():
    """A key prefix of its own for each test, deleted afterwards."""
    client = _redis_or_skip()
    prefix = f"test-admission-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(params=["memory", "redis"])
def make_controller(request):
    """Builds controllers of one kind; two of them share the same state."""
    if request.param == "memory":
        shared = {}

        def make_memory(**options):
            if "controller" not in shared:
                shared["controller"] = MemoryAdmission(**options)
            return shared["controller"]

        return make_memory

    prefix = request.getfixturevalue("redis_prefix")

    def make_redis(**options):
        return RedisAdmission(REDIS_TEST_URL, prefix=prefix, **options)

    return make_redis


def test_it_never_exceeds_capacity_under_concurrency(make_controller):
    """Threads of two sizes hammer a pool of 4 units; never more are held."""
    controller = make_controller()
    capacity = 4
    lock = threading.Lock()
    held_units = [0]
    max_units = [0]
    admissions = [0]

    def worker(index):
        cost = 1 + index % 2
        user = f"user-{index % 3}"
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            lease = controller.wait_for_slot(
                POOL, user, "interactive", capacity, cost=cost, timeout=10
            )
            with lock:
                held_units[0] += cost
                max_units[0] = max(max_units[0], held_units[0])
                admissions[0] += 1
            time.sleep(0.003)
            with lock:
                held_units[0] -= cost
            lease.release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert max_units[0] <= capacity
    assert max_units[0] >= capacity - 1
    assert admissions[0] > 50


def test_it_admits_a_colleague_between_one_users_many_jobs(make_controller):
    """Twenty batch jobs of one user do not keep a colleague's two waiting."""
    controller = make_controller()
    capacity = 4
    alice_jobs = [controller.enqueue(POOL, "alice", "batch") for _ in range(20)]
    bob_chat = controller.enqueue(POOL, "bob", "interactive")
    bob_job = controller.enqueue(POOL, "bob", "batch")

    assert controller.position(bob_chat).position == 1
    assert controller.position(bob_job).position <= capacity

    # Alice's jobs poll first and most often; Bob's still get in.
    admitted = []
    for ticket in [*alice_jobs, bob_chat, bob_job]:
        if controller.try_admit(ticket, capacity):
            admitted.append(ticket.user_key)
    assert admitted.count("bob") == 2
    assert len(admitted) == capacity


def test_it_puts_a_newcomer_before_a_user_who_holds_every_slot(make_controller):
    controller = make_controller()
    capacity = 4
    alice_jobs = [controller.enqueue(POOL, "alice", "batch") for _ in range(20)]
    leases = [controller.try_admit(ticket, capacity) for ticket in alice_jobs]
    assert sum(1 for lease in leases if lease) == capacity

    bob_job = controller.enqueue(POOL, "bob", "batch")

    place = controller.position(bob_job)
    assert (place.position, place.ahead_cost) == (1, 0)
    leases[0].release()
    assert controller.try_admit(alice_jobs[capacity], capacity) is None
    assert controller.try_admit(bob_job, capacity) is not None


def test_it_admits_interactive_before_batch(make_controller):
    controller = make_controller()
    batch = controller.enqueue(POOL, "alice", "batch")
    chat = controller.enqueue(POOL, "carol", "interactive")

    assert controller.position(chat).position == 1
    assert controller.position(batch).position == 2
    assert controller.try_admit(batch, 1) is None
    assert controller.try_admit(chat, 1) is not None


def test_it_keeps_a_large_request_ahead_of_smaller_ones(make_controller):
    """A long prompt costing 2 is not overtaken by short ones behind it."""
    controller = make_controller()
    capacity = 4
    running = controller.try_admit(
        controller.enqueue(POOL, "alice", "interactive", cost=3), capacity
    )
    long_prompt = controller.enqueue(POOL, "bob", "interactive", cost=2)
    short_prompt = controller.enqueue(POOL, "carol", "interactive", cost=1)

    assert controller.try_admit(short_prompt, capacity) is None
    assert controller.position(short_prompt, capacity).ahead_cost == 2

    running.release()
    assert controller.try_admit(long_prompt, capacity) is not None
    assert controller.try_admit(short_prompt, capacity) is not None


def test_it_runs_a_request_bigger_than_the_pool_alone(make_controller):
    controller = make_controller()
    huge = controller.enqueue(POOL, "alice", "interactive", cost=8)

    lease = controller.try_admit(huge, 2)

    assert lease is not None
    assert lease.cost == 2


def test_it_moves_the_others_up_when_a_ticket_is_cancelled(make_controller):
    controller = make_controller()
    first = controller.enqueue(POOL, "alice", "interactive")
    second = controller.enqueue(POOL, "bob", "interactive")
    third = controller.enqueue(POOL, "carol", "interactive")
    assert controller.position(third).position == 3

    controller.cancel(first)
    controller.cancel(first)

    assert controller.position(second).position == 1
    assert controller.position(third) == (2, 1, None)
    with pytest.raises(UnknownTicket):
        controller.try_admit(first, 1)


def test_it_frees_the_slot_of_an_expired_lease(make_controller):
    controller = make_controller(lease_ttl=0.3)
    holder = controller.enqueue(POOL, "alice", "interactive")
    waiter = controller.enqueue(POOL, "bob", "interactive")
    lease = controller.try_admit(holder, 1)
    assert controller.try_admit(waiter, 1) is None

    time.sleep(0.5)

    assert controller.try_admit(waiter, 1) is not None
    assert lease.renew() is False
    assert lease.lost


def test_it_keeps_a_renewed_lease(make_controller):
    controller = make_controller(lease_ttl=0.3)
    holder = controller.enqueue(POOL, "alice", "interactive")
    waiter = controller.enqueue(POOL, "bob", "interactive")

    with controller.try_admit(holder, 1) as lease:
        for _ in range(8):
            time.sleep(0.1)
            assert controller.try_admit(waiter, 1) is None

    assert not lease.lost
    assert controller.try_admit(waiter, 1) is not None


def test_it_drops_the_ticket_of_a_waiter_that_stopped_polling(make_controller):
    controller = make_controller(ticket_ttl=0.3)
    gone = controller.enqueue(POOL, "alice", "interactive")
    alive = controller.enqueue(POOL, "bob", "interactive")

    for _ in range(5):
        time.sleep(0.1)
        controller.position(alive)

    assert controller.position(alive).position == 1
    with pytest.raises(UnknownTicket):
        controller.position(gone)


def test_it_reports_the_place_every_second_while_waiting(make_controller):
    """wait_for_slot reports 3, 2, 1 with gaps under a second, then admits."""
    controller = make_controller()
    holder = controller.try_admit(controller.enqueue(POOL, "alice", "batch"), 1)
    ahead = [controller.enqueue(POOL, user, "batch") for user in ("bob", "carol")]
    reports = []
    outcome = {}

    def wait():
        outcome["lease"] = controller.wait_for_slot(
            POOL,
            "dave",
            "batch",
            1,
            on_wait=lambda position, eta: reports.append(
                (time.monotonic(), position, eta)
            ),
            timeout=20,
        )

    started = time.monotonic()
    waiter = threading.Thread(target=wait)
    waiter.start()
    for ticket in ahead:
        time.sleep(1.3)
        holder.release()
        holder = controller.try_admit(ticket, 1)
        assert holder is not None
    time.sleep(1.3)
    holder.release()
    waiter.join(timeout=5)

    assert outcome["lease"] is not None
    positions = [position for _, position, _ in reports]
    assert positions[0] == 3
    assert positions == sorted(positions, reverse=True)
    assert {1, 2, 3} <= set(positions)
    times = [started] + [at for at, _, _ in reports]
    assert max(b - a for a, b in zip(times, times[1:])) < 1.0
    # Once a few slots were held and given back, the wait has an estimate.
    assert reports[-1][2] is not None


def test_it_wakes_the_next_waiter_promptly_on_release(make_controller):
    controller = make_controller()
    holder = controller.try_admit(controller.enqueue(POOL, "alice", "batch"), 1)
    admitted_at = {}

    def wait():
        controller.wait_for_slot(POOL, "bob", "batch", 1, timeout=10)
        admitted_at["bob"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.6)
    released_at = time.monotonic()
    holder.release()
    waiter.join(timeout=5)

    assert admitted_at["bob"] - released_at < 0.15


def test_it_leaves_the_queue_when_cancelled(make_controller):
    controller = make_controller()
    controller.try_admit(controller.enqueue(POOL, "alice", "batch"), 1)
    stop = threading.Event()
    errors = []

    def wait():
        try:
            controller.wait_for_slot(
                POOL, "bob", "batch", 1, cancelled=stop.is_set, timeout=10
            )
        except Cancelled as error:
            errors.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    stop.set()
    waiter.join(timeout=5)
    later = controller.enqueue(POOL, "carol", "batch")

    assert len(errors) == 1
    assert controller.position(later).position == 1


def test_it_gives_up_after_the_timeout(make_controller):
    controller = make_controller()
    controller.try_admit(controller.enqueue(POOL, "alice", "batch"), 1)
    started = time.monotonic()

    with pytest.raises(TimedOut):
        controller.wait_for_slot(POOL, "bob", "batch", 1, timeout=0.5)

    assert 0.5 <= time.monotonic() - started < 1.5
    later = controller.enqueue(POOL, "carol", "batch")
    assert controller.position(later).position == 1


def test_it_refuses_an_unknown_priority(make_controller):
    with pytest.raises(ValueError):
        make_controller().enqueue(POOL, "alice", "urgent")


def test_it_orders_the_same_in_redis_and_in_memory(redis_prefix):
    """The Lua queue order matches the Python one on a random mix."""
    rng = random.Random(4)
    controllers = [MemoryAdmission(), RedisAdmission(REDIS_TEST_URL, redis_prefix)]
    places = []
    for controller in controllers:
        rng.seed(4)
        for _ in range(3):
            user = rng.choice("abcd")
            controller.try_admit(controller.enqueue(POOL, user, "batch"), 3)
        tickets = [
            controller.enqueue(
                POOL,
                rng.choice("abcdef"),
                rng.choice(["interactive", "batch"]),
                cost=rng.choice([1, 1, 2]),
            )
            for _ in range(40)
        ]
        places.append([tuple(controller.position(t, 3)) for t in tickets])

    assert places[0] == places[1]
    assert sorted(place[0] for place in places[0]) == list(range(1, 41))


# A process of its own that competes for the pool through Redis.
COMPETITOR_SCRIPT = textwrap.dedent(
    """
    import sys
    import time

    import redis

    from assistant.admission import RedisAdmission

    url, prefix, mode, user = sys.argv[1:5]
    controller = RedisAdmission(url, prefix=prefix, lease_ttl=1.0)
    client = redis.Redis.from_url(url)

    if mode == "hold":
        lease = controller.wait_for_slot("pool", user, "interactive", 1)
        lease.start_renewing()
        print("holding", flush=True)
        time.sleep(600)

    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with controller.wait_for_slot("pool", user, "interactive", 1, timeout=10):
            if client.incr(prefix + ":holders") > 1:
                client.incr(prefix + ":overlaps")
            client.incr(prefix + ":admitted:" + user)
            time.sleep(0.01)
            client.decr(prefix + ":holders")
    """
)


def _start_competitor(tmp_path, prefix, mode, user):
    script = tmp_path / "competitor.py"
    script.write_text(COMPETITOR_SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), REDIS_TEST_URL, prefix, mode, user],
        cwd=REPO_DIR,
        env={**os.environ, "PYTHONPATH": str(REPO_DIR)},
        stdout=subprocess.PIPE,
        text=True,
    )


def test_it_holds_capacity_across_processes(redis_prefix, tmp_path):
    """Two processes competing for one slot never both hold it."""
    client = _redis_or_skip()
    processes = [
        _start_competitor(tmp_path, redis_prefix, "compete", user)
        for user in ("alice", "bob")
    ]
    for process in processes:
        assert process.wait(timeout=30) == 0

    assert client.get(f"{redis_prefix}:overlaps") is None
    assert int(client.get(f"{redis_prefix}:admitted:alice")) > 5
    assert int(client.get(f"{redis_prefix}:admitted:bob")) > 5


def test_it_frees_the_slot_of_a_killed_process(redis_prefix, tmp_path):
    """kill -9 of the holder frees its slot once the lease runs out."""
    controller = RedisAdmission(REDIS_TEST_URL, prefix=redis_prefix)
    holder = _start_competitor(tmp_path, redis_prefix, "hold", "alice")
    try:
        assert holder.stdout.readline().strip() == "holding"
        # The holder renews its 1-second lease, so the slot stays taken.
        with pytest.raises(TimedOut):
            controller.wait_for_slot("pool", "bob", "interactive", 1, timeout=1.5)

        os.kill(holder.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        lease = controller.wait_for_slot("pool", "bob", "interactive", 1, timeout=5)
    finally:
        holder.kill()
        holder.wait()

    assert lease is not None
    assert time.monotonic() - killed_at < 1.5


def test_peek_places_a_newcomer_where_enqueueing_would_without_queueing_it(
    make_controller,
):
    controller = make_controller()
    capacity = 2
    holders = [controller.enqueue(POOL, "alice", "interactive") for _ in range(2)]
    leases = [controller.try_admit(ticket, capacity) for ticket in holders]
    assert all(leases)
    waiting = [controller.enqueue(POOL, "alice", "interactive") for _ in range(3)]
    batch = controller.enqueue(POOL, "carol", "batch")

    # Bob holds nothing: fair order puts him before Alice's waiting three,
    # and any interactive request goes before Carol's batch job.
    bob = controller.peek(POOL, "bob", "interactive", capacity)
    alice = controller.peek(POOL, "alice", "interactive", capacity)
    carol = controller.peek(POOL, "carol", "batch", capacity)

    assert (bob.position, bob.ahead_cost) == (1, 0)
    assert alice.position == 4
    assert carol.position == 5
    # Nothing was queued by looking.
    assert [controller.position(t).position for t in waiting] == [1, 2, 3]
    assert controller.position(batch).position == 4
    bob_ticket = controller.enqueue(POOL, "bob", "interactive")
    assert controller.position(bob_ticket).position == bob.position


def test_peek_says_nothing_when_the_request_would_go_straight_in(make_controller):
    controller = make_controller()
    lease = controller.try_admit(controller.enqueue(POOL, "alice", "interactive"), 2)
    assert lease

    assert controller.peek(POOL, "bob", "interactive", 2) is None
    assert controller.peek(POOL, "bob", "interactive", 2, cost=2) is not None


def test_the_wait_counts_down_as_the_slot_holder_ages():
    """One slot, held 6 s into an average hold of 10 s: about 4 s left."""
    averages = {0: 10.0}
    first = estimate_eta(1, 1, [(1, 6.0, 0)], averages, rank=0)
    later = estimate_eta(1, 1, [(1, 8.5, 0)], averages, rank=0)

    assert (first, later) == (4.0, 1.5)
    # Past its average it may end any moment.
    assert estimate_eta(1, 1, [(1, 12.0, 0)], averages, rank=0) == 0.0


def test_the_wait_behind_others_adds_their_holds():
    """Third in line for one slot: the holder's rest, then two whole holds."""
    assert estimate_eta(3, 1, [(1, 6.0, 0)], {0: 10.0}, rank=0) == 24.0
    # Two slots: the second to free lets the next in, halves the rest.
    assert estimate_eta(3, 2, [(1, 2.0, 0), (1, 5.0, 0)], {0: 10.0}, 0) == 13.0


def test_each_rank_holds_by_its_own_average():
    """A batch lease (a title) is expected to end by the batch average."""
    averages = {0: 30.0, 1: 1.0}
    assert estimate_eta(1, 2, [(1, 0.0, 0), (1, 0.5, 1)], averages, 0) == 0.5
    assert estimate_eta(1, 1, [], {}, rank=0) is None


def test_the_estimate_counts_down_and_keeps_ranks_apart(make_controller):
    """Short batch holds do not shorten the wait for an interactive slot."""
    controller = make_controller()
    for priority, seconds in (("batch", 0.05), ("interactive", 1.0)):
        lease = controller.try_admit(controller.enqueue(POOL, "alice", priority), 1)
        time.sleep(seconds)
        lease.release()
    holder = controller.try_admit(controller.enqueue(POOL, "alice"), 1)
    waiter = controller.enqueue(POOL, "bob")
    try:
        first = controller.position(waiter, 1).eta
        time.sleep(0.3)
        later = controller.position(waiter, 1).eta
    finally:
        controller.cancel(waiter)
        holder.release()

    # About 1 s, the interactive average, less the holder's age; one
    # average of both ranks would be about a third of a second.
    assert 0.5 < first <= 1.2
    assert later <= first - 0.2
