"""The usage pages: each user's own, and the overview for staff."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.utils import timezone

from assistant import usage


@login_required
def usage_home(request):
    now = timezone.now()
    days = usage.report_days(now)
    rows = usage.daily_use(request.user, days)

    context = {
        "rows": rows,
        "days": days,
        "quota": usage.quota_standing(request.user, now),
        "zone": timezone.get_current_timezone_name(),
        "chart": usage.chart_data(rows, days),
    }
    return render(request, "assistant/usage.html", context)


@login_required
def usage_overview(request):
    if not request.user.is_staff:
        raise PermissionDenied

    context = {
        "report": usage.overview(timezone.now()),
        "zone": timezone.get_current_timezone_name(),
    }
    return render(request, "assistant/usage_overview.html", context)
