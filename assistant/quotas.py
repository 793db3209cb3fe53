"""Quotas: how many tokens a user may use a day and a month, and at once.

A user is under their own Quota and under those of their groups; for each
limit the tightest applies. Tokens are UsageRecord.counted_tokens (prompt
plus completion as the server reported them, estimates where it did not;
see assistant.metering.counted_tokens), summed over the local day and the
local month of settings.TIME_ZONE: the daily quota resets at local midnight,
the monthly one at midnight on the 1st.

A request is admitted while the tokens used plus its own prompt fit in what
is left. Its reply is not known in advance, and use is recorded when a
request ends, so the requests running when the limit is crossed are allowed
to finish: a quota can be overrun by the replies of those requests (one,
for a user limited to one request at a time).

check_quota() costs one query for a user without quotas and one aggregate
query more for a user with token limits (on the user-and-created index);
a concurrency limit adds the caller's count of open requests.
"""

import datetime
import math
from contextlib import contextmanager
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from assistant.models import OpenRequest, Quota, UsageRecord

RESET_FORMAT = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class Limits:
    """The tightest limits that apply to a user; None means no limit."""

    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    concurrent_requests: int | None = None

    @property
    def limits_tokens(self):
        return self.daily_tokens is not None or self.monthly_tokens is not None


@dataclass(frozen=True)
class Period:
    """A day or a month of local time: [start, end)."""

    start: datetime.datetime
    end: datetime.datetime


@dataclass(frozen=True)
class TokenBudget:
    """One token limit as it stands: what is used and left, when it resets."""

    limit: int
    used: int
    resets_at: datetime.datetime

    @property
    def left(self):
        return max(0, self.limit - self.used)

    def params(self, needed):
        return {
            "limit": self.limit,
            "used": self.used,
            "left": self.left,
            "needed": needed,
            "resets": timezone.localtime(self.resets_at).strftime(RESET_FORMAT),
            "zone": timezone.get_current_timezone_name(),
        }

    def refusal(self, code, needed):
        return Refusal(code, self.params(needed), resets_at=self.resets_at)


@dataclass(frozen=True)
class Refusal:
    """Why a request was not admitted: an error code and its figures.

    `resets_at` is when a token quota that refused it resets; None for the
    other refusals.
    """

    code: str
    params: dict
    resets_at: datetime.datetime | None = None

    def seconds_to_reset(self, now=None):
        """Whole seconds until the quota resets, at least 1; None if unknown."""
        if self.resets_at is None:
            return None
        left = (self.resets_at - (now or timezone.now())).total_seconds()
        return max(1, math.ceil(left))


def limits_for(user):
    """The tightest of the user's own and their groups' quotas; None if none."""
    quotas = list(Quota.objects.filter(Q(user=user) | Q(group__user=user)).distinct())
    if not quotas:
        return None

    return Limits(
        daily_tokens=_tightest(quota.daily_tokens for quota in quotas),
        monthly_tokens=_tightest(quota.monthly_tokens for quota in quotas),
        concurrent_requests=_tightest(quota.concurrent_requests for quota in quotas),
    )


def _tightest(values):
    limits = [value for value in values if value is not None]
    return min(limits) if limits else None


def local_day(now):
    """The local calendar day holding `now`."""
    start = _local_midnight(timezone.localtime(now).date())
    return Period(start, _local_midnight(start.date() + datetime.timedelta(days=1)))


def local_month(now):
    """The local calendar month holding `now`."""
    today = timezone.localtime(now).date()
    first = today.replace(day=1)
    # Day 28 exists in every month; four days on is always the next month.
    following = (first.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
    return Period(_local_midnight(first), _local_midnight(following))


def _local_midnight(date):
    # Combined with the zone, not added to a midnight, so that a day with a
    # daylight-saving change still starts and ends at 00:00 local time.
    return datetime.datetime.combine(
        date, datetime.time.min, tzinfo=timezone.get_current_timezone()
    )


def tokens_used(user, now):
    """(today, this month): counted tokens of the user, in one query."""
    day, month = local_day(now), local_month(now)
    totals = UsageRecord.objects.filter(
        user=user, created__gte=month.start, created__lt=month.end
    ).aggregate(
        month=Sum("counted_tokens"),
        day=Sum(
            "counted_tokens",
            filter=Q(created__gte=day.start, created__lt=day.end),
        ),
    )
    return totals["day"] or 0, totals["month"] or 0


def token_budgets(user, limits, now):
    """{"daily": TokenBudget, "monthly": TokenBudget} for the limits set."""
    if limits is None or not limits.limits_tokens:
        return {}

    used_today, used_this_month = tokens_used(user, now)
    budgets = {}
    if limits.daily_tokens is not None:
        budgets["daily"] = TokenBudget(
            limits.daily_tokens, used_today, local_day(now).end
        )
    if limits.monthly_tokens is not None:
        budgets["monthly"] = TokenBudget(
            limits.monthly_tokens, used_this_month, local_month(now).end
        )
    return budgets


def check_quota(user, needed_tokens, count_open, now=None):
    """A Refusal if the request must not be admitted, else None.

    needed_tokens: the request's prompt, estimated. count_open(): how many
    other requests of the user are queued or running; called only when a
    concurrency limit applies.
    """
    now = now or timezone.now()
    limits = limits_for(user)
    if limits is None:
        return None

    needed = needed_tokens or 0
    for period, budget in token_budgets(user, limits, now).items():
        if budget.used + needed > budget.limit:
            return budget.refusal(f"quota_{period}", needed)

    if limits.concurrent_requests is not None:
        open_requests = count_open()
        if open_requests >= limits.concurrent_requests:
            params = {"limit": limits.concurrent_requests, "open": open_requests}
            return Refusal("quota_concurrent", params)
    return None


def in_flight_since(now=None):
    """Requests started before this are not in flight any more.

    No request outlives its longest queue wait plus its longest reply; an
    older one was left by a worker that died and must not hold the user's
    concurrency quota for ever.
    """
    now = now or timezone.now()
    return now - datetime.timedelta(
        seconds=settings.QUEUE_TIMEOUT + settings.MODEL_API_TOTAL_TIMEOUT
    )


def open_requests_outside_chat(user, before=None):
    """How many of the user's non-chat requests are in flight (OpenRequest rows).

    With `before` (an OpenRequest), only those that started ahead of it.
    """
    rows = OpenRequest.objects.filter(user=user, started__gte=in_flight_since())
    if before is not None:
        rows = rows.filter(pk__lt=before.pk)
    return rows.count()


def open_chat_replies(user):
    """The user's chat replies queued or being written, for batch work to count.

    Looked up by name, so that the project package does not import the chat
    app; a deployment without chat counts none.
    """
    if not apps.is_installed("chat"):
        return 0
    message = apps.get_model("chat", "Message")
    return message.objects.filter(
        conversation__user=user,
        role=message.Role.ASSISTANT,
        status__in=[message.Status.QUEUED, message.Status.STREAMING],
        created__gte=in_flight_since(),
    ).count()


def requests_ahead(in_flight):
    """The user's requests at once that go before `in_flight` (an OpenRequest).

    Their open chat replies, and their other requests that started before
    this one: of two sent together, the first goes ahead.
    """
    return open_chat_replies(in_flight.user_id) + open_requests_outside_chat(
        in_flight.user_id, before=in_flight
    )


@contextmanager
def open_request(user, kind):
    """Count a non-chat request as in flight for as long as the block runs."""
    row = OpenRequest.objects.create(user_id=getattr(user, "pk", user), kind=kind)
    try:
        yield row
    finally:
        OpenRequest.objects.filter(pk=row.pk).delete()
