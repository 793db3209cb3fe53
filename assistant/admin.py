from django.contrib import admin

from assistant.models import ExternalIdentity, ModelProfile


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
