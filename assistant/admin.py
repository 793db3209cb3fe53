from django.contrib import admin, messages
from django.db import transaction
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from assistant import capacity_probe
from assistant.models import (
    Backend,
    CapacityProbeRun,
    ExternalIdentity,
    ModelProfile,
    Quota,
    UsageRecord,
)
from assistant.tasks import run_capacity_probe


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "base_url",
        "api_key_variable",
        "enabled",
        "from_environment",
        "sort_order",
    ]
    list_editable = ["enabled", "sort_order"]
    search_fields = ["name", "base_url"]

    def get_readonly_fields(self, request, obj=None):
        # The environment rewrites these on every refresh; an edit here
        # would silently come undone.
        if obj is not None and obj.from_environment:
            return ["name", "base_url", "api_key_variable"]
        return []


@admin.register(ModelProfile)
class ModelProfileAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "backend",
        "display_name",
        "enabled",
        "is_reasoning",
        "starts_in_reasoning",
        "supports_vision",
        "thinking_switch",
        "context_window",
        "input_limit",
        "max_output_tokens",
        "sort_order",
    ]
    list_editable = ["enabled", "supports_vision", "sort_order"]
    list_filter = ["backend", "enabled", "is_reasoning"]
    list_select_related = ["backend"]
    search_fields = ["name", "display_name"]
    actions = ["probe_capacity"]

    @admin.action(
        description=_("Probe capacity (a bounded grid of requests to the server)"),
        permissions=["change"],
    )
    def probe_capacity(self, request, queryset):
        started = []
        for profile in queryset:
            if profile.probe_runs.filter(status__in=PROBE_OPEN_STATES).exists():
                self.message_user(
                    request,
                    _("A probe of %(model)s is already queued or running.")
                    % {"model": profile.name},
                    messages.WARNING,
                )
                continue
            run = CapacityProbeRun.objects.create(
                profile=profile,
                requested_by=request.user,
                concurrency=list(capacity_probe.DEFAULT_CONCURRENCY),
                contexts=list(capacity_probe.DEFAULT_CONTEXTS),
                max_requests=capacity_probe.DEFAULT_MAX_REQUESTS,
                timeout=capacity_probe.DEFAULT_TIMEOUT,
            )
            transaction.on_commit(
                lambda run_id=run.pk: run_capacity_probe.delay(run_id)
            )
            started.append(profile.name)

        if started:
            self.message_user(
                request,
                _(
                    "Probe started for %(models)s. It sends at most %(budget)s "
                    "requests each, straight to the server, while users' requests "
                    "go on; its table is under Capacity probes."
                )
                % {
                    "models": ", ".join(started),
                    "budget": capacity_probe.DEFAULT_MAX_REQUESTS,
                },
                messages.SUCCESS,
            )


PROBE_OPEN_STATES = [CapacityProbeRun.Status.QUEUED, CapacityProbeRun.Status.RUNNING]
PROBE_COLUMNS = [
    ("context", _("context")),
    ("concurrency", _("concurrency")),
    ("total_rate", _("total tok/s")),
    ("mean_request_rate", _("tok/s per request")),
    ("over_timeout", _("over the timeout")),
    ("errors", _("errors")),
    ("mean_first_token_s", _("first token s")),
    ("skipped", _("skipped because")),
]


@admin.register(CapacityProbeRun)
class CapacityProbeRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "requests_sent", "suggestion", "finished"]
    list_filter = ["status", "profile"]
    list_select_related = ["profile"]
    readonly_fields = [
        "profile_link",
        "status",
        "requested_by",
        "concurrency",
        "contexts",
        "max_requests",
        "timeout",
        "requests_sent",
        "table",
        "suggestion",
        "reason_list",
        "error",
        "created",
        "finished",
    ]
    exclude = ["profile", "cells", "reasons"]
    actions = ["apply_suggestion"]

    # Probes are started from the model profiles' action and only read here.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("model profile"))
    def profile_link(self, run):
        url = reverse("admin:assistant_modelprofile_change", args=[run.profile_id])
        return format_html('<a href="{}">{}</a>', url, run.profile.name)

    @admin.display(description=_("measurements"))
    def table(self, run):
        if not run.cells:
            return "-"
        header = format_html_join(
            "", "<th>{}</th>", ((label,) for _k, label in PROBE_COLUMNS)
        )
        rows = format_html_join(
            "",
            "<tr>{}</tr>",
            (
                (
                    format_html_join(
                        "",
                        "<td>{}</td>",
                        (
                            (_cell_value(cell.get(key)),)
                            for key, _label in PROBE_COLUMNS
                        ),
                    ),
                )
                for cell in run.cells
            ),
        )
        return format_html("<table><tr>{}</tr>{}</table>", header, rows)

    @admin.display(description=_("reasons"))
    def reason_list(self, run):
        if not run.reasons:
            return "-"
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", "<li>{}</li>", ((r,) for r in run.reasons)),
        )

    @admin.action(description=_("Apply the suggested limits to the model profile"))
    def apply_suggestion(self, request, queryset):
        for run in queryset.select_related("profile"):
            if run.status != CapacityProbeRun.Status.DONE or not run.suggestion:
                self.message_user(
                    request,
                    _("%(run)s has no suggestion to apply.") % {"run": run},
                    messages.WARNING,
                )
                continue
            profile = run.profile
            for name, value in run.suggestion.items():
                setattr(profile, name, value)
            profile.save(update_fields=list(run.suggestion))
            self.message_user(
                request,
                _("Limits of %(model)s set to %(limits)s.")
                % {"model": profile.name, "limits": run.suggestion},
                messages.SUCCESS,
            )


def _cell_value(value):
    if value is None or value == "":
        return "-"
    return value


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(admin.ModelAdmin):
    list_display = ["subject", "issuer", "user", "created"]
    list_select_related = ["user"]
    search_fields = ["subject", "user__username", "user__email"]
    raw_id_fields = ["user"]
    # Rewritten at every sign-in from the provider's claims.
    readonly_fields = ["claim_groups"]


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "scope_label",
        "daily_tokens",
        "monthly_tokens",
        "concurrent_requests",
    ]
    list_select_related = ["user", "group"]
    search_fields = ["user__username", "group__name"]
    raw_id_fields = ["user"]

    @admin.display(description=_("scope"))
    def scope_label(self, quota):
        return quota.scope.label


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created",
        "user",
        "kind",
        "model",
        "end_state",
        "error_code",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "counted_tokens",
        "queue_ms",
        "first_token_ms",
        "duration_ms",
        "api_key",
        "group",
    ]
    list_filter = ["kind", "end_state", "model", "group"]
    list_select_related = ["user", "api_key", "group"]
    search_fields = ["user__username"]
    date_hierarchy = "created"

    # The meter's readings: looked at, never edited.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
