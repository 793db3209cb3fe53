from django.contrib import admin

from academic.models import Conversion


@admin.register(Conversion)
class ConversionAdmin(admin.ModelAdmin):
    list_display = ["pk", "owner", "kind", "target", "status", "model", "created"]
    list_filter = ["status", "kind", "target", "model"]
    list_select_related = ["owner"]
    search_fields = ["owner__username", "source"]
    raw_id_fields = ["owner"]
    # The picture is bytes; the admin has no sensible widget for them.
    exclude = ["image"]
    readonly_fields = ["created", "finished", "prompt_tokens", "completion_tokens"]
