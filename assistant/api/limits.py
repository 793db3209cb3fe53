"""A key's own limits: requests a minute, tokens a day and a month.

These come on top of the quotas of the key's user and groups
(assistant.quotas), which the API checks as chat does. The rate limit counts
requests in fixed windows of one minute in the cache, which is Redis in
production and so shared by every web process; a burst at the turn of a
minute can reach twice the rate for a moment, the usual price of a fixed
window.
"""

import math
import time

from django.core.cache import cache
from django.db.models import Q, Sum
from django.utils import timezone

from assistant import quotas
from assistant.models import UsageRecord

WINDOW_SECONDS = 60


def take_request(key, now=None):
    """Count one request of the key; seconds to wait if over its rate, else None."""
    if key.requests_per_minute is None:
        return None

    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    counter = f"api:rate:{key.pk}:{window}"
    # add() sets the counter only if absent, so two processes starting a
    # window at once do not reset each other's count.
    cache.add(counter, 0, timeout=WINDOW_SECONDS * 2)
    count = cache.incr(counter)
    if count <= key.requests_per_minute:
        return None
    return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))


def key_tokens_used(key, now):
    """(today, this month): counted tokens of the key, in one query."""
    day, month = quotas.local_day(now), quotas.local_month(now)
    totals = UsageRecord.objects.filter(
        api_key=key, created__gte=month.start, created__lt=month.end
    ).aggregate(
        month=Sum("counted_tokens"),
        day=Sum(
            "counted_tokens", filter=Q(created__gte=day.start, created__lt=day.end)
        ),
    )
    return totals["day"] or 0, totals["month"] or 0


def check_key_quota(key, needed_tokens, now=None):
    """A quotas.Refusal if the key's own token quota has no room, else None."""
    if key.daily_tokens is None and key.monthly_tokens is None:
        return None

    now = now or timezone.now()
    used_today, used_this_month = key_tokens_used(key, now)
    budgets = {}
    if key.daily_tokens is not None:
        budgets["daily"] = quotas.TokenBudget(
            key.daily_tokens, used_today, quotas.local_day(now).end
        )
    if key.monthly_tokens is not None:
        budgets["monthly"] = quotas.TokenBudget(
            key.monthly_tokens, used_this_month, quotas.local_month(now).end
        )

    for period, budget in budgets.items():
        if budget.used + needed_tokens > budget.limit:
            return budget.refusal(f"key_quota_{period}", needed_tokens)
    return None
