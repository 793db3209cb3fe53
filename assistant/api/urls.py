from django.urls import path

from assistant.api import endpoints, views

# /v1/: what OpenAI's clients call.
v1_patterns = [
    path("models", endpoints.list_models, name="api-models"),
    path("chat/completions", endpoints.chat_completions, name="api-chat"),
    path("embeddings", endpoints.embeddings, name="api-embeddings"),
    path("<path:path>", endpoints.unknown_endpoint, name="api-unknown"),
]

# /api/: the pages where people manage keys and read their usage.
page_patterns = [
    path("keys/", views.key_list, name="api-keys"),
    path("keys/<int:key_id>/rotate/", views.rotate_key, name="api-key-rotate"),
    path("keys/<int:key_id>/revoke/", views.revoke_key, name="api-key-revoke"),
    path("usage/", views.key_usage, name="api-usage"),
    path("usage.csv", views.key_usage_csv, name="api-usage-csv"),
]
