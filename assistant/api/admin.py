from django.contrib import admin

from assistant.api.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display_prefix",
        "user",
        "group",
        "requests_per_minute",
        "daily_tokens",
        "monthly_tokens",
        "created",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["group"]
    list_select_related = ["user", "group"]
    search_fields = ["name", "prefix", "user__username", "group__name"]
    raw_id_fields = ["user"]
    # The secret is made on the keys page and shown there once; here an
    # administrator changes limits and scope, or revokes.
    readonly_fields = ["prefix", "secret_hash", "created", "rotated_at", "last_used_at"]

    def has_add_permission(self, request):
        return False
