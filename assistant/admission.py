"""Admission control: a few requests in flight per model, the rest in a fair queue.

A pool is one backend's model (any string key). Each request asks for `cost`
units of the pool; the caller says how many units the pool has (its
capacity), so a long prompt can cost more than a short one. A request that
does not fit waits as a ticket in the pool's queue, and the queue admits in
this order:

1. interactive before batch;
2. then the user holding the fewest slots of the pool, counting the tickets
   of this same ordering as if they had already been admitted, which makes it
   a round robin between users: one user's twenty batch jobs take turns with
   a colleague's single one instead of going first;
3. then the user whose oldest waiting ticket is oldest;
4. then each user's own tickets oldest first.

A ticket is admitted once it fits behind everything ahead of it, so positions
are honest: position 3 means two tickets go first. A large ticket is never
overtaken by smaller ones behind it, which would otherwise starve it.

Slots are leases that expire unless renewed, so a worker killed in the middle
of a reply gives its slots back after ADMISSION_LEASE_SECONDS; waiting tickets
expire the same way when their waiter stops polling. Redis holds the state in
production, shared by every worker process on every host, and changes it only
in Lua scripts, so each step is atomic; the embedded default keeps the same
state in memory, for the one process it runs in.

The usual call, from a worker thread about to open a model stream::

    lease = wait_for_slot(pool, user_key, "interactive", capacity=4, cost=1,
                          on_wait=publish_position, cancelled=stop_requested)
    with lease:  # renews in the background, releases on the way out
        ...
"""

import itertools
import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings

logger = logging.getLogger(__name__)

# Chat waits for a person at the screen; batch work (polish chunks, API
# jobs) waits for nobody in particular.
INTERACTIVE = "interactive"
BATCH = "batch"
PRIORITIES = {INTERACTIVE: 0, BATCH: 1}
LEASE_TTL_SECONDS = 30.0
# A waiter polls every POLL_SECONDS; a ticket not polled for this long
# belongs to a waiter that died, and gives its place up.
TICKET_TTL_SECONDS = 6.0
POLL_SECONDS = 0.25
# The id of the request peek() places without queueing it.
PEEK_ID = "__peek__"
# At most this long between two on_wait calls, so that the browser hears
# about the queue at least once a second: a wait between two calls runs up to
# a POLL_SECONDS past this, and on a busy host the update's trip to the
# browser adds a tenth of a second or more.
ON_WAIT_INTERVAL = 0.5
# Weight of the newest hold time in the moving average behind the ETA.
HOLD_AVERAGE_WEIGHT = 0.3
KEY_PREFIX = "admission"


class AdmissionError(Exception):
    """A request that was not admitted."""


class Cancelled(AdmissionError):
    """The waiter's cancelled() said yes before a slot was free."""


class TimedOut(AdmissionError):
    """No slot was free within the waiter's timeout."""


class UnknownTicket(AdmissionError):
    """The ticket was cancelled, admitted, or expired for want of polling."""


@dataclass(frozen=True)
class Ticket:
    pool: str
    id: str
    user_key: str
    priority: str
    cost: int


class QueuePlace(NamedTuple):
    """Where a ticket stands: 1 is next; eta in seconds, None when unknown."""

    position: int
    ahead_cost: int
    eta: float | None


class Lease:
    """Slots held in a pool until release(), or until the lease expires.

    As a context manager it renews itself from a daemon thread every third
    of its time to live, and releases on exit, on every path out.
    """

    def __init__(self, controller, pool, lease_id, cost):
        self.controller = controller
        self.pool = pool
        self.id = lease_id
        self.cost = cost
        self.lost = False
        self.released = False
        self._stop_renewing = threading.Event()
        self._renewer = None

    def renew(self):
        """Push the expiry back; False when the lease had already expired."""
        if self.released or self.lost:
            return False

        if not self.controller._renew(self.pool, self.id):
            self.lost = True
            logger.warning("lease %s of pool %s expired unrenewed", self.id, self.pool)
        return not self.lost

    def release(self):
        """Give the slots back and wake the next waiters; safe to repeat."""
        self._stop_renewing.set()
        if self.released:
            return

        self.released = True
        self.controller._release(self.pool, self.id)

    def start_renewing(self):
        if self._renewer is None:
            self._renewer = threading.Thread(
                target=self._renew_until_released,
                name=f"lease-{self.id[:8]}",
                daemon=True,
            )
            self._renewer.start()
        return self

    def __enter__(self):
        return self.start_renewing()

    def __exit__(self, *exc_info):
        self.release()

    def _renew_until_released(self):
        interval = self.controller.lease_ttl / 3
        while not self._stop_renewing.wait(interval):
            try:
                if not self.renew():
                    return
            except Exception:
                # A blip in the connection to Redis: the next try may work,
                # and the lease outlives a couple of missed renewals.
                logger.exception("renewing lease %s failed", self.id)


class AdmissionController:
    """The API shared by the Redis and the in-memory implementations."""

    def __init__(self, lease_ttl=LEASE_TTL_SECONDS, ticket_ttl=TICKET_TTL_SECONDS):
        self.lease_ttl = lease_ttl
        self.ticket_ttl = ticket_ttl

    def enqueue(self, pool, user_key, priority="interactive", cost=1):
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {sorted(PRIORITIES)}")
        if int(cost) < 1:
            raise ValueError("cost must be at least 1")

        ticket = Ticket(pool, uuid.uuid4().hex, str(user_key), priority, int(cost))
        self._insert(ticket)
        return ticket

    def try_admit(self, ticket, capacity):
        """A Lease if the ticket's turn has come and it fits, else None.

        Also counts as the waiter's heartbeat. Raises UnknownTicket for a
        ticket no longer queued.
        """
        outcome = self._poll(ticket, capacity, admit=True)
        return outcome if isinstance(outcome, Lease) else None

    def position(self, ticket, capacity=None):
        """The ticket's QueuePlace; eta needs the capacity."""
        return self._poll(ticket, capacity, admit=False)

    def cancel(self, ticket):
        """Leave the queue; nothing happens for a ticket no longer queued."""
        self._remove(ticket)

    def peek(self, pool, user_key, priority, capacity, cost=1):
        """The QueuePlace a request would get if it queued now; None if it fits.

        Nothing is queued. A chat reply's worker may take a moment to start
        on a busy machine; this lets the browser show the place at once, and
        the worker's own ticket then reports the place it really holds
        (fair order may move it ahead of later arrivals' estimate).
        """
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {sorted(PRIORITIES)}")
        return self._peek(
            pool, str(user_key), PRIORITIES[priority], max(1, int(cost)), capacity
        )

    def wait_for_slot(
        self,
        pool,
        user_key,
        priority,
        capacity,
        *,
        cost=1,
        on_wait=None,
        cancelled=None,
        timeout=None,
    ):
        """Queue, wait for a slot and return its Lease (not yet renewing).

        on_wait(position, eta) is called when the request first has to wait,
        whenever its position changes, and at least every ON_WAIT_INTERVAL
        seconds. cancelled() is asked before every poll; a true answer raises
        Cancelled. Past timeout seconds, TimedOut. The ticket leaves the
        queue on every way out that is not an admission.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        ticket = self.enqueue(pool, user_key, priority, cost)
        try:
            return self._wait(ticket, capacity, on_wait, cancelled, deadline)
        except BaseException:
            self.cancel(ticket)
            raise

    def _wait(self, ticket, capacity, on_wait, cancelled, deadline):
        reported_position = None
        reported_at = 0.0
        while True:
            if cancelled is not None and cancelled():
                raise Cancelled(ticket.id)

            outcome = self._poll_or_requeue(ticket, capacity)
            if isinstance(outcome, Lease):
                return outcome

            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimedOut(ticket.id)

            moved = outcome.position != reported_position
            if on_wait is not None and (moved or now - reported_at >= ON_WAIT_INTERVAL):
                on_wait(outcome.position, outcome.eta)
                reported_position, reported_at = outcome.position, now

            self._sleep(ticket, POLL_SECONDS)

    def admit_or_place(self, ticket, capacity):
        """One step of a wait: a Lease if admitted, else the QueuePlace.

        For a caller that waits its own way between steps (an event loop,
        with asyncio.sleep); it must call again within the ticket's TTL,
        and cancel() the ticket if it gives up. A ticket that expired all
        the same queues again, at the back.
        """
        return self._poll_or_requeue(ticket, capacity)

    def _poll_or_requeue(self, ticket, capacity):
        try:
            return self._poll(ticket, capacity, admit=True)
        except UnknownTicket:
            # The ticket expired while this waiter was stalled (a long pause
            # of the whole process); it queues again, at the back.
            logger.warning(
                "ticket %s of pool %s expired, queued again", ticket.id, ticket.pool
            )
            self._insert(ticket)
            return self._poll(ticket, capacity, admit=True)

    def _lease(self, pool, lease_id, cost):
        return Lease(self, pool, lease_id, cost)


def fair_order(waiting, held):
    """The waiting tickets in the order the queue will admit them.

    waiting: Waiting tuples of one pool; held: slots each user holds now.
    """
    held = dict(held)
    order = []
    for rank in sorted({entry.rank for entry in waiting}):
        queues = {}
        for entry in sorted((e for e in waiting if e.rank == rank), key=_by_seq):
            queues.setdefault(entry.user, deque()).append(entry)

        while queues:
            user = min(queues, key=lambda u: (held.get(u, 0), queues[u][0].seq))
            order.append(queues[user].popleft())
            held[user] = held.get(user, 0) + 1
            if not queues[user]:
                del queues[user]
    return order


def _by_seq(entry):
    return entry.seq


def clamp_cost(cost, capacity):
    # A request bigger than the whole pool still runs, alone.
    return cost if capacity is None else min(cost, capacity)


def estimate_eta(shortfall, capacity, holds, hold_averages, rank):
    """Seconds until `shortfall` more units are free, None when unknown.

    holds: (cost, age in seconds, rank) of each lease held now;
    hold_averages: the moving average of recent hold times by rank, since a
    batch request (a title, a polish chunk) holds its slot for another time
    than a chat reply. Each lease is expected to end when it reaches its
    rank's average, so the estimate counts down as the leases age; units
    needed beyond those held now free up at about capacity / average units a
    second, the average of the waiter's own rank.
    """
    if capacity is None or not hold_averages:
        return None
    if shortfall <= 0:
        return 0.0

    fallback = sum(hold_averages.values()) / len(hold_averages)
    remaining = sorted(
        (max(0.0, hold_averages.get(lease_rank, fallback) - age), cost)
        for cost, age, lease_rank in holds
    )
    freed = 0
    for seconds, cost in remaining:
        freed += cost
        if freed >= shortfall:
            return seconds

    last_end = remaining[-1][0] if remaining else 0.0
    average = hold_averages.get(rank, fallback)
    return last_end + (shortfall - freed) * average / capacity


class Waiting(NamedTuple):
    id: str
    user: str
    rank: int
    seq: int
    cost: int
    expires_at: float


class HeldSlots(NamedTuple):
    user: str
    cost: int
    started_at: float
    expires_at: float
    rank: int = 0


class _MemoryPool:
    def __init__(self):
        self.waiting = {}
        self.leases = {}
        # rank -> moving average of hold times in seconds
        self.hold_averages = {}

    def drop_expired(self, now):
        for ticket_id, entry in list(self.waiting.items()):
            if entry.expires_at <= now:
                del self.waiting[ticket_id]
        for lease_id, lease in list(self.leases.items()):
            if lease.expires_at <= now:
                logger.warning("lease %s expired unreleased", lease_id)
                del self.leases[lease_id]

    def usage(self):
        held = {}
        for lease in self.leases.values():
            held[lease.user] = held.get(lease.user, 0) + 1
        return sum(lease.cost for lease in self.leases.values()), held

    def holds(self, now):
        """(cost, age, rank) of each lease, for estimate_eta."""
        return [
            (lease.cost, now - lease.started_at, lease.rank)
            for lease in self.leases.values()
        ]


class MemoryAdmission(AdmissionController):
    """Admission within one process, for the embedded default."""

    def __init__(self, lease_ttl=LEASE_TTL_SECONDS, ticket_ttl=TICKET_TTL_SECONDS):
        super().__init__(lease_ttl, ticket_ttl)
        self._pools = {}
        self._seq = itertools.count()
        self._changed = threading.Condition()

    def _insert(self, ticket):
        with self._changed:
            pool = self._pools.setdefault(ticket.pool, _MemoryPool())
            pool.waiting[ticket.id] = Waiting(
                ticket.id,
                ticket.user_key,
                PRIORITIES[ticket.priority],
                next(self._seq),
                ticket.cost,
                time.monotonic() + self.ticket_ttl,
            )

    def _poll(self, ticket, capacity, admit):
        now = time.monotonic()
        with self._changed:
            pool = self._pools.setdefault(ticket.pool, _MemoryPool())
            pool.drop_expired(now)
            entry = pool.waiting.get(ticket.id)
            if entry is None:
                raise UnknownTicket(ticket.id)
            pool.waiting[ticket.id] = entry._replace(expires_at=now + self.ticket_ttl)

            used, held = pool.usage()
            order = fair_order(list(pool.waiting.values()), held)
            position = [e.id for e in order].index(ticket.id) + 1
            ahead = sum(clamp_cost(e.cost, capacity) for e in order[: position - 1])
            cost = clamp_cost(entry.cost, capacity)
            shortfall = used + ahead + cost - (capacity or 0)
            if admit and capacity is not None and shortfall <= 0:
                return self._admit(ticket, pool, cost, now)
            holds, hold_averages = pool.holds(now), dict(pool.hold_averages)

        eta = estimate_eta(shortfall, capacity, holds, hold_averages, entry.rank)
        return QueuePlace(position, ahead, eta)

    def _peek(self, pool_name, user_key, rank, cost, capacity):
        now = time.monotonic()
        with self._changed:
            pool = self._pools.setdefault(pool_name, _MemoryPool())
            pool.drop_expired(now)
            used, held = pool.usage()
            newcomer = Waiting(PEEK_ID, user_key, rank, next(self._seq), cost, now)
            order = fair_order([*pool.waiting.values(), newcomer], held)
            position = [e.id for e in order].index(PEEK_ID) + 1
            ahead = sum(clamp_cost(e.cost, capacity) for e in order[: position - 1])
            shortfall = used + ahead + clamp_cost(cost, capacity) - (capacity or 0)
            holds, hold_averages = pool.holds(now), dict(pool.hold_averages)
        if capacity is not None and shortfall <= 0:
            return None
        return QueuePlace(
            position,
            ahead,
            estimate_eta(shortfall, capacity, holds, hold_averages, rank),
        )

    def _admit(self, ticket, pool, cost, now):
        del pool.waiting[ticket.id]
        lease_id = uuid.uuid4().hex
        expires_at = now + self.lease_ttl
        pool.leases[lease_id] = HeldSlots(
            ticket.user_key, cost, now, expires_at, PRIORITIES[ticket.priority]
        )
        return self._lease(ticket.pool, lease_id, cost)

    def _remove(self, ticket):
        with self._changed:
            pool = self._pools.get(ticket.pool)
            if pool is not None:
                pool.waiting.pop(ticket.id, None)
            self._changed.notify_all()

    def _renew(self, pool_name, lease_id):
        now = time.monotonic()
        with self._changed:
            pool = self._pools[pool_name]
            pool.drop_expired(now)
            lease = pool.leases.get(lease_id)
            if lease is None:
                return False
            pool.leases[lease_id] = lease._replace(expires_at=now + self.lease_ttl)
            return True

    def _release(self, pool_name, lease_id):
        now = time.monotonic()
        with self._changed:
            pool = self._pools[pool_name]
            lease = pool.leases.pop(lease_id, None)
            if lease is not None:
                pool.hold_averages[lease.rank] = _moving_average(
                    pool.hold_averages.get(lease.rank), now - lease.started_at
                )
            self._changed.notify_all()

    def _sleep(self, ticket, seconds):
        with self._changed:
            self._changed.wait(seconds)


def _moving_average(average, sample):
    if average is None:
        return sample
    return (1 - HOLD_AVERAGE_WEIGHT) * average + HOLD_AVERAGE_WEIGHT * sample


# Shared by the scripts below. KEYS: the pool's waiting tickets (hash of id
# to JSON), their expiry times (sorted set), its leases' expiry times (sorted
# set), the leases (hash of id to JSON), its statistics (hash), its ticket
# counter. Times are Redis's own clock in milliseconds, the same for every
# host; numbers go back to Python as strings, since Redis truncates floats.
LUA_COMMON = """
local tickets, ticket_expiry, lease_expiry, leases, stats, counter =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

local function drop_expired(now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', ticket_expiry, '-inf', now)) do
    redis.call('ZREM', ticket_expiry, id)
    redis.call('HDEL', tickets, id)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', lease_expiry, '-inf', now)) do
    redis.call('ZREM', lease_expiry, id)
    redis.call('HDEL', leases, id)
  end
end

local function usage()
  local used, held = 0, {}
  local raw = redis.call('HGETALL', leases)
  for i = 2, #raw, 2 do
    local lease = cjson.decode(raw[i])
    used = used + lease.c
    held[lease.u] = (held[lease.u] or 0) + 1
  end
  return used, held
end

local function goes_first(a, b, held)
  local held_a, held_b = held[a.user] or 0, held[b.user] or 0
  if held_a ~= held_b then
    return held_a < held_b
  end
  return a.queue[a.next].s < b.queue[b.next].s
end

-- The same order as fair_order() in Python.
local function fair_order(held)
  local raw = redis.call('HGETALL', tickets)
  local classes, ranks = {}, {}
  for i = 1, #raw, 2 do
    local ticket = cjson.decode(raw[i + 1])
    ticket.id = raw[i]
    if not classes[ticket.r] then
      classes[ticket.r] = {}
      table.insert(ranks, ticket.r)
    end
    local queues = classes[ticket.r]
    queues[ticket.u] = queues[ticket.u] or {}
    table.insert(queues[ticket.u], ticket)
  end
  table.sort(ranks)

  local order = {}
  for _, rank in ipairs(ranks) do
    local users = {}
    for user, queue in pairs(classes[rank]) do
      table.sort(queue, function(a, b) return a.s < b.s end)
      table.insert(users, {user = user, queue = queue, next = 1})
    end
    while #users > 0 do
      local best = 1
      for i = 2, #users do
        if goes_first(users[i], users[best], held) then
          best = i
        end
      end
      local chosen = users[best]
      table.insert(order, chosen.queue[chosen.next])
      chosen.next = chosen.next + 1
      held[chosen.user] = (held[chosen.user] or 0) + 1
      if chosen.next > #chosen.queue then
        table.remove(users, best)
      end
    end
  end
  return order
end

local function clamp(cost, capacity)
  if capacity > 0 and cost > capacity then
    return capacity
  end
  return cost
end

-- The answer to a waiter: its place, then what the estimate of its wait
-- needs: its rank, the moving average of hold times of each rank (0
-- interactive, 1 batch: PRIORITIES in Python), then cost, age (ms) and rank
-- of each lease held now.
local function waiting_reply(position, ahead, used, rank, now)
  local reply = {'waiting', tostring(position), tostring(ahead), tostring(used),
    tostring(rank),
    redis.call('HGET', stats, 'hold_average_ms:0') or '',
    redis.call('HGET', stats, 'hold_average_ms:1') or ''}
  local raw = redis.call('HGETALL', leases)
  for i = 2, #raw, 2 do
    local lease = cjson.decode(raw[i])
    table.insert(reply, tostring(lease.c))
    table.insert(reply, tostring(now - lease.t))
    table.insert(reply, tostring(lease.r or 0))
  end
  return reply
end
"""

# ARGV: ticket id, its JSON without the sequence number, ticket TTL (ms).
LUA_ENQUEUE = """
local ticket = cjson.decode(ARGV[2])
ticket.s = redis.call('INCR', counter)
redis.call('HSET', tickets, ARGV[1], cjson.encode(ticket))
redis.call('ZADD', ticket_expiry, now_ms() + tonumber(ARGV[3]), ARGV[1])
return ticket.s
"""

# ARGV: ticket id, capacity (0: unknown), admit (1/0), ticket TTL (ms),
# lease TTL (ms), the new lease's id, the ticket's wake-up key.
# Returns {'admitted', cost} or {'waiting', position, ahead, used, rank,
# wait figures...}, or {'unknown'}.
LUA_POLL = """
local ticket_id, capacity = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
drop_expired(now)
local raw = redis.call('HGET', tickets, ticket_id)
if not raw then
  return {'unknown'}
end
redis.call('ZADD', ticket_expiry, now + tonumber(ARGV[4]), ticket_id)

local used, held = usage()
local position, ahead = 0, 0
for i, entry in ipairs(fair_order(held)) do
  if entry.id == ticket_id then
    position = i
    break
  end
  ahead = ahead + clamp(entry.c, capacity)
end

local ticket = cjson.decode(raw)
local cost = clamp(ticket.c, capacity)
if ARGV[3] == '1' and capacity > 0 and used + ahead + cost <= capacity then
  redis.call('HDEL', tickets, ticket_id)
  redis.call('ZREM', ticket_expiry, ticket_id)
  redis.call('DEL', ARGV[7])
  local lease = {u = ticket.u, c = cost, t = now, r = ticket.r}
  redis.call('HSET', leases, ARGV[6], cjson.encode(lease))
  redis.call('ZADD', lease_expiry, now + tonumber(ARGV[5]), ARGV[6])
  return {'admitted', tostring(cost)}
end
return waiting_reply(position, ahead, used, ticket.r, now)
"""

# ARGV: the newcomer's JSON without the sequence number, capacity (0:
# unknown). Places a newcomer in the fair order without queueing it: it is
# added and removed inside this one atomic script. Returns {'fits'} or
# {'waiting', position, ahead, used, rank, wait figures...}.
LUA_PEEK = """
local capacity = tonumber(ARGV[2])
local now = now_ms()
drop_expired(now)
local newcomer = cjson.decode(ARGV[1])
newcomer.s = tonumber(redis.call('GET', counter) or '0') + 1
local peek_id = '__peek__'
redis.call('HSET', tickets, peek_id, cjson.encode(newcomer))
local used, held = usage()
local position, ahead = 0, 0
for i, entry in ipairs(fair_order(held)) do
  if entry.id == peek_id then
    position = i
    break
  end
  ahead = ahead + clamp(entry.c, capacity)
end
redis.call('HDEL', tickets, peek_id)
if capacity > 0 and used + ahead + clamp(newcomer.c, capacity) <= capacity then
  return {'fits'}
end
return waiting_reply(position, ahead, used, newcomer.r, now)
"""

# ARGV: lease id, lease TTL (ms). Returns 1 if renewed, 0 if already expired.
LUA_RENEW = """
local now = now_ms()
local expires_at = redis.call('ZSCORE', lease_expiry, ARGV[1])
if not expires_at or tonumber(expires_at) <= now then
  redis.call('ZREM', lease_expiry, ARGV[1])
  redis.call('HDEL', leases, ARGV[1])
  return 0
end
redis.call('ZADD', lease_expiry, now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# ARGV: lease id, weight of the newest hold time, prefix of the wake-up
# keys. Wakes the waiters that the freed units let in, at least the first.
LUA_RELEASE = """
local now = now_ms()
local raw = redis.call('HGET', leases, ARGV[1])
redis.call('HDEL', leases, ARGV[1])
redis.call('ZREM', lease_expiry, ARGV[1])
if not raw then
  return 0
end

local lease = cjson.decode(raw)
local hold = now - lease.t
local average_key = 'hold_average_ms:' .. tostring(lease.r or 0)
local average = tonumber(redis.call('HGET', stats, average_key))
if average then
  local weight = tonumber(ARGV[2])
  hold = (1 - weight) * average + weight * hold
end
redis.call('HSET', stats, average_key, tostring(math.floor(hold)))

drop_expired(now)
local _, held = usage()
local woken = 0
for i, entry in ipairs(fair_order(held)) do
  if i > 1 and woken + entry.c > lease.c then
    break
  end
  woken = woken + entry.c
  local wake_key = ARGV[3] .. entry.id
  redis.call('RPUSH', wake_key, '1')
  redis.call('PEXPIRE', wake_key, 10000)
end
return 1
"""


class RedisAdmission(AdmissionController):
    """Admission shared by every process that reaches the same Redis."""

    def __init__(
        self,
        url,
        prefix=KEY_PREFIX,
        lease_ttl=LEASE_TTL_SECONDS,
        ticket_ttl=TICKET_TTL_SECONDS,
    ):
        import redis

        super().__init__(lease_ttl, ticket_ttl)
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url)
        self._enqueue_script = self._redis.register_script(LUA_COMMON + LUA_ENQUEUE)
        self._poll_script = self._redis.register_script(LUA_COMMON + LUA_POLL)
        self._renew_script = self._redis.register_script(LUA_COMMON + LUA_RENEW)
        self._release_script = self._redis.register_script(LUA_COMMON + LUA_RELEASE)
        self._peek_script = self._redis.register_script(LUA_COMMON + LUA_PEEK)

    def _insert(self, ticket):
        fields = {
            "u": ticket.user_key,
            "r": PRIORITIES[ticket.priority],
            "c": ticket.cost,
        }
        self._enqueue_script(
            keys=self._keys(ticket.pool),
            args=[ticket.id, json.dumps(fields), _ms(self.ticket_ttl)],
        )

    def _poll(self, ticket, capacity, admit):
        lease_id = uuid.uuid4().hex
        reply = self._poll_script(
            keys=self._keys(ticket.pool),
            args=[
                ticket.id,
                capacity or 0,
                1 if admit else 0,
                _ms(self.ticket_ttl),
                _ms(self.lease_ttl),
                lease_id,
                self._wake_key(ticket),
            ],
        )
        state = reply[0].decode()
        if state == "unknown":
            raise UnknownTicket(ticket.id)
        if state == "admitted":
            return self._lease(ticket.pool, lease_id, int(reply[1]))

        position, ahead, used = (int(value) for value in reply[1:4])
        cost = clamp_cost(ticket.cost, capacity)
        shortfall = used + ahead + cost - (capacity or 0)
        return QueuePlace(position, ahead, _eta_from(reply, shortfall, capacity))

    def _peek(self, pool, user_key, rank, cost, capacity):
        fields = {"u": user_key, "r": rank, "c": cost}
        reply = self._peek_script(
            keys=self._keys(pool), args=[json.dumps(fields), capacity or 0]
        )
        if reply[0].decode() == "fits":
            return None
        position, ahead, used = (int(value) for value in reply[1:4])
        shortfall = used + ahead + clamp_cost(cost, capacity) - (capacity or 0)
        return QueuePlace(position, ahead, _eta_from(reply, shortfall, capacity))

    def _remove(self, ticket):
        keys = self._keys(ticket.pool)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(keys[0], ticket.id)
        pipe.zrem(keys[1], ticket.id)
        pipe.delete(self._wake_key(ticket))
        pipe.execute()

    def _renew(self, pool, lease_id):
        renewed = self._renew_script(
            keys=self._keys(pool), args=[lease_id, _ms(self.lease_ttl)]
        )
        return renewed == 1

    def _release(self, pool, lease_id):
        self._release_script(
            keys=self._keys(pool),
            args=[lease_id, HOLD_AVERAGE_WEIGHT, self._wake_prefix(pool)],
        )

    def _sleep(self, ticket, seconds):
        # A release pushes to the wake-up keys of the waiters it lets in.
        self._redis.blpop([self._wake_key(ticket)], timeout=seconds)

    def _keys(self, pool):
        # The braces keep a pool's keys in one slot of a Redis Cluster.
        base = f"{self.prefix}:{{{pool}}}"
        names = ("tickets", "ticket-expiry", "lease-expiry", "leases", "stats", "seq")
        return [f"{base}:{name}" for name in names]

    def _wake_prefix(self, pool):
        return f"{self.prefix}:{{{pool}}}:wake:"

    def _wake_key(self, ticket):
        return self._wake_prefix(ticket.pool) + ticket.id


def _ms(seconds):
    return max(1, int(seconds * 1000))


def _eta_from(reply, shortfall, capacity):
    """estimate_eta from a 'waiting' reply of the poll or peek script."""
    rank = int(reply[4])
    hold_averages = {
        each_rank: int(raw) / 1000 for each_rank, raw in enumerate(reply[5:7]) if raw
    }
    figures = [int(value) for value in reply[7:]]
    holds = [
        (figures[i], figures[i + 1] / 1000, figures[i + 2])
        for i in range(0, len(figures), 3)
    ]
    return estimate_eta(shortfall, capacity, holds, hold_averages, rank)


_controller = None
_controller_lock = threading.Lock()


def get_admission():
    """The process's controller: on Redis when REDIS_URL is set."""
    global _controller
    with _controller_lock:
        if _controller is None:
            lease_ttl = settings.ADMISSION_LEASE_SECONDS
            if settings.REDIS_URL:
                _controller = RedisAdmission(settings.REDIS_URL, lease_ttl=lease_ttl)
            else:
                _controller = MemoryAdmission(lease_ttl=lease_ttl)
        return _controller


def wait_for_slot(pool, user_key, priority, capacity, **options):
    """AdmissionController.wait_for_slot on the process's controller."""
    return get_admission().wait_for_slot(pool, user_key, priority, capacity, **options)
