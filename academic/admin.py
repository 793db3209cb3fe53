from django.contrib import admin

from academic.models import PolishChunk, PolishFile, PolishJob


class PolishFileInline(admin.TabularInline):
    model = PolishFile
    fields = ["position", "path", "source_kind", "encoding", "has_bom", "newline"]
    readonly_fields = fields
    extra = 0
    can_delete = False


class PolishChunkInline(admin.TabularInline):
    model = PolishChunk
    fields = [
        "position",
        "status",
        "failure_code",
        "attempts",
        "prompt_tokens",
        "completion_tokens",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False


@admin.register(PolishJob)
class PolishJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "owner", "file_name", "task", "model", "status", "created"]
    list_filter = ["status", "task", "model"]
    search_fields = ["owner__username", "file_name"]
    readonly_fields = ["owner", "task", "preset", "model", "file_name", "status"]
    exclude = ["archive", "cache_key", "is_project"]
    inlines = [PolishFileInline, PolishChunkInline]
