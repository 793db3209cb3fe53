from django.urls import path

from chat import preset_views, views

urlpatterns = [
    path("", views.home, name="chat-home"),
    path("c/<int:pk>/", views.conversation, name="chat-conversation"),
    path("c/<int:pk>/rename/", views.rename, name="chat-rename"),
    path("c/<int:pk>/pin/", views.pin, name="chat-pin"),
    path("c/<int:pk>/delete/", views.delete, name="chat-delete"),
    path("c/<int:pk>/restore/", views.restore, name="chat-restore"),
    path("c/<int:pk>/share/", views.share, name="chat-share"),
    path("c/<int:pk>/unshare/", views.unshare, name="chat-unshare"),
    path("s/<str:token>/", views.shared, name="chat-shared"),
    path(
        "c/<int:pk>/export.md",
        views.export,
        {"kind": "md"},
        name="chat-export-markdown",
    ),
    path(
        "c/<int:pk>/export.json",
        views.export,
        {"kind": "json"},
        name="chat-export-json",
    ),
    path("conversations/", views.conversation_list, name="chat-conversations"),
    path("conversations/export/", views.export_all, name="chat-export-all"),
    path(
        "conversations/import/",
        views.import_conversations,
        name="chat-import",
    ),
    path("search/", views.search_view, name="chat-search"),
    path("attachments/", views.attach, name="chat-attach"),
    path(
        "c/<int:pk>/settings/",
        preset_views.conversation_settings,
        name="chat-settings",
    ),
    path("presets/", preset_views.preset_list, name="chat-presets"),
    path("presets/new/", preset_views.preset_create, name="chat-preset-create"),
    path(
        "presets/<int:pk>/rename/",
        preset_views.preset_rename,
        name="chat-preset-rename",
    ),
    path(
        "presets/<int:pk>/delete/",
        preset_views.preset_delete,
        name="chat-preset-delete",
    ),
]
