"""The signed-in pages of the API: the keys, and their usage with a CSV export."""

import csv
import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from assistant import usage
from assistant.api.forms import ApiKeyForm
from assistant.api.models import ApiKey

logger = logging.getLogger(__name__)

# The full key of a new or rotated key waits here for the one page that
# shows it, and is gone from the session once shown.
NEW_KEY_SESSION = "api_new_key"


def _get_key_for_user(request, key_id):
    return get_object_or_404(ApiKey.objects.managed_by(request.user), pk=key_id)


def _show_once(request, key, raw_key):
    request.session[NEW_KEY_SESSION] = {"id": key.pk, "key": raw_key}


@login_required
def key_list(request):
    if request.method == "POST":
        form = ApiKeyForm(request.POST, user=request.user)
        if form.is_valid():
            key = form.save(commit=False)
            key.user = request.user
            raw_key = key.new_secret()
            key.save()

            logger.info("api key %s made by user %s", key.prefix, request.user.pk)
            _show_once(request, key, raw_key)
            return redirect("api-keys")
    else:
        form = ApiKeyForm(user=request.user)

    keys = ApiKey.objects.managed_by(request.user).select_related("user", "group")
    context = {
        "form": form,
        "keys": keys,
        "new_key": request.session.pop(NEW_KEY_SESSION, None),
        "base_url": request.build_absolute_uri("/v1"),
    }
    return render(request, "api/keys.html", context)


@login_required
@require_POST
def rotate_key(request, key_id):
    key = _get_key_for_user(request, key_id)
    if not key.is_active:
        messages.error(request, _("A revoked key cannot be rotated."))
        return redirect("api-keys")

    raw_key = key.rotate()

    logger.info("api key %s rotated by user %s", key.prefix, request.user.pk)
    _show_once(request, key, raw_key)
    return redirect("api-keys")


@login_required
@require_POST
def revoke_key(request, key_id):
    key = _get_key_for_user(request, key_id)
    if key.is_active:
        key.revoke()
        logger.info("api key %s revoked by user %s", key.prefix, request.user.pk)
        messages.success(
            request, _("The key %(name)s is revoked.") % {"name": key.name}
        )
    return redirect("api-keys")


def _usage_rows(user, days):
    rows = (
        usage.records_since(days[0])
        .filter(api_key__in=ApiKey.objects.managed_by(user))
        .annotate(day=usage.local_date())
        .values("day", "api_key__name", "api_key__prefix", "group__name", "model")
        .annotate(**usage.TOTALS)
        .order_by("-day", "api_key__name", "model")
    )
    return list(rows)


@login_required
def key_usage(request):
    days = usage.report_days(timezone.now())
    context = {
        "rows": _usage_rows(request.user, days),
        "days": days,
        "zone": timezone.get_current_timezone_name(),
    }
    return render(request, "api/usage.html", context)


CSV_COLUMNS = [
    ("day", "day"),
    ("key", "api_key__name"),
    ("key_prefix", "api_key__prefix"),
    ("team", "group__name"),
    ("model", "model"),
    ("requests", "requests"),
    ("counted_tokens", "tokens"),
    ("prompt_tokens", "prompt"),
    ("completion_tokens", "completion"),
    ("reasoning_tokens", "reasoning"),
    ("unreported", "unreported"),
    ("errors", "errors"),
]


@login_required
def key_usage_csv(request):
    days = usage.report_days(timezone.now())
    rows = _usage_rows(request.user, days)

    response = HttpResponse(content_type="text/csv; charset=utf-8")
    filename = f"api-usage-{days[-1].isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    # Column names stay English, for the billing scripts that read them.
    writer = csv.writer(response)
    writer.writerow([name for name, _field in CSV_COLUMNS])
    for row in rows:
        writer.writerow(_csv_value(row[field]) for _name, field in CSV_COLUMNS)
    return response


def _csv_value(value):
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
