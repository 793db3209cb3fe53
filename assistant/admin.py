from django.contrib import admin

from assistant.models import ModelProfile


@admin.register(ModelProfile)
class ModelProfileAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display_name",
        "enabled",
        "is_reasoning",
        "starts_in_reasoning",
        "context_window",
        "input_limit",
        "max_output_tokens",
        "sort_order",
    ]
    list_editable = ["enabled", "sort_order"]
    search_fields = ["name", "display_name"]
