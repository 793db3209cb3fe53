"""What the usage pages show: tokens by day and model, quotas, the overview.

Each report is one aggregate query over UsageRecord, grouped in the local
time of settings.TIME_ZONE, so that "a day" means the same here as for the
daily quota. Token sums count what the server reported; a request whose
count is unknown adds nothing to those sums (and says so in `unreported`),
while counted_tokens, what the quotas charge, includes the app's estimate.
"""

import datetime

from django.db.models import Count, Q, Sum
from django.db.models.functions import ExtractHour, TruncDate
from django.utils import timezone

from assistant import quotas
from assistant.models import UsageRecord

REPORT_DAYS = 30
OVERVIEW_USERS = 50

TOTALS = {
    "requests": Count("id"),
    "tokens": Sum("counted_tokens"),
    "prompt": Sum("prompt_tokens"),
    "completion": Sum("completion_tokens"),
    "reasoning": Sum("reasoning_tokens"),
    "unreported": Count("id", filter=Q(completion_tokens__isnull=True)),
    "errors": Count("id", filter=Q(end_state=UsageRecord.EndState.ERROR)),
}


def report_days(now, days=REPORT_DAYS):
    """The last `days` local dates, oldest first, today last."""
    today = timezone.localtime(now).date()
    return [today - datetime.timedelta(days=back) for back in range(days - 1, -1, -1)]


def records_since(first_day):
    start = datetime.datetime.combine(
        first_day, datetime.time.min, tzinfo=timezone.get_current_timezone()
    )
    return UsageRecord.objects.filter(created__gte=start)


def local_date():
    return TruncDate("created", tzinfo=timezone.get_current_timezone())


def daily_use(user, days):
    """One row per local day and model the user asked anything of, newest first."""
    rows = (
        records_since(days[0])
        .filter(user=user)
        .annotate(day=local_date())
        .values("day", "model")
        .annotate(**TOTALS)
        .order_by("-day", "model")
    )
    return list(rows)


def chart_data(rows, days):
    """Counted tokens per model per day, every day present, for the chart."""
    models = sorted({row["model"] for row in rows})
    index = {day: position for position, day in enumerate(days)}
    series = {model: [0] * len(days) for model in models}
    for row in rows:
        series[row["model"]][index[row["day"]]] = row["tokens"] or 0
    return {
        "days": [day.isoformat() for day in days],
        "series": [{"model": model, "tokens": series[model]} for model in models],
    }


def quota_standing(user, now):
    """The user's limits and, for token limits, what is used and left."""
    limits = quotas.limits_for(user)
    if limits is None:
        return None
    return {
        "limits": limits,
        "budgets": quotas.token_budgets(user, limits, now),
    }


def overview(now, days=REPORT_DAYS):
    """Everyone's use over the last `days` local days, cut several ways."""
    report = report_days(now, days)
    records = records_since(report[0])
    by_state = list(
        records.values("end_state").annotate(requests=Count("id")).order_by("-requests")
    )
    by_day = records.annotate(day=local_date()).values("day")
    return {
        "days": report,
        "by_user": _named(
            records.values("user__username")
            .annotate(**TOTALS)
            .order_by("-tokens")[:OVERVIEW_USERS],
            "user__username",
        ),
        # A user in two groups counts in both; one in none, under None.
        "by_group": _named(
            records.values("user__groups__name").annotate(**TOTALS).order_by("-tokens"),
            "user__groups__name",
        ),
        "by_model": _named(
            records.values("model").annotate(**TOTALS).order_by("-tokens"),
            "model",
        ),
        "by_day": _named(by_day.annotate(**TOTALS).order_by("-day"), "day"),
        "by_hour": _busiest_hours(records),
        "by_state": _with_shares(by_state),
        "by_error": list(
            records.exclude(error_code="")
            .values("error_code")
            .annotate(requests=Count("id"))
            .order_by("-requests")
        ),
    }


def _named(rows, key):
    """The rows with what they are grouped by under one name, for the tables."""
    named = []
    for row in rows:
        name = row.pop(key)
        row["name"] = name.isoformat() if isinstance(name, datetime.date) else name
        named.append(row)
    return named


def _busiest_hours(records):
    """Requests and tokens by local hour, all 24; bar: percent of the busiest."""
    hour = ExtractHour("created", tzinfo=timezone.get_current_timezone())
    counts = {
        row["hour"]: row
        for row in records.annotate(hour=hour)
        .values("hour")
        .annotate(requests=Count("id"), tokens=Sum("counted_tokens"))
    }
    busiest = max((row["requests"] for row in counts.values()), default=0)
    hours = []
    for number in range(24):
        row = counts.get(number, {"requests": 0, "tokens": 0})
        share = row["requests"] / busiest if busiest else 0
        hours.append({"hour": number, **row, "bar": round(100 * share)})
    return hours


def _with_shares(rows):
    total = sum(row["requests"] for row in rows)
    for row in rows:
        row["share"] = 100 * row["requests"] / total if total else 0
        row["label"] = UsageRecord.EndState(row["end_state"]).label
    return rows
