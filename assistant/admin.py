from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from assistant.models import ExternalIdentity, ModelProfile, Quota, UsageRecord


@admin.register(ModelProfile)
class ModelProfileAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display_name",
        "enabled",
        "is_reasoning",
        "starts_in_reasoning",
        "supports_vision",
        "context_window",
        "input_limit",
        "max_output_tokens",
        "sort_order",
    ]
    list_editable = ["enabled", "supports_vision", "sort_order"]
    search_fields = ["name", "display_name"]


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
