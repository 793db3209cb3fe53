from django.contrib import admin

from academic.models import (
    CodeAnalysis,
    CodePart,
    Conversion,
    Paper,
    PolishChunk,
    PolishFile,
    PolishJob,
)


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


@admin.register(Paper)
class PaperAdmin(admin.ModelAdmin):
    list_display = ["pk", "owner", "title", "source_kind", "status", "model", "created"]
    list_filter = ["status", "source_kind", "model"]
    list_select_related = ["owner"]
    search_fields = ["owner__username", "title", "file_name"]
    raw_id_fields = ["owner", "conversation"]
    readonly_fields = ["created", "finished_at"]


class CodePartInline(admin.TabularInline):
    model = CodePart
    fields = ["position", "file", "first_line", "last_line", "status", "failure_code"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(CodeAnalysis)
class CodeAnalysisAdmin(admin.ModelAdmin):
    list_display = ["pk", "owner", "name", "model", "status", "created"]
    list_filter = ["status", "model"]
    search_fields = ["owner__username", "name"]
    readonly_fields = ["owner", "name", "model", "status", "overview_status"]
    # The map, the skipped list and the overview are read on the page.
    exclude = ["project_map", "skipped", "cache_key", "conversation"]
    inlines = [CodePartInline]
