from django.contrib import admin

from chat.models import Conversation, Message, Preset


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ["role", "model", "status", "error_code", "completion_tokens", "created"]
    readonly_fields = fields
    show_change_link = True
    can_delete = False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["title", "user", "model", "updated"]
    list_filter = ["model"]
    search_fields = ["title", "user__username"]
    raw_id_fields = ["user"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = [
        "pk",
        "role",
        "model",
        "status",
        "error_code",
        "first_token_ms",
        "duration_ms",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "created",
    ]
    list_filter = ["role", "status", "model", "error_code"]
    raw_id_fields = ["conversation"]
    readonly_fields = ["stream_key", "last_seq", "created", "started_at"]


@admin.register(Preset)
class PresetAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "temperature", "max_output_tokens", "thinking"]
    search_fields = ["name", "user__username"]
    raw_id_fields = ["user"]
