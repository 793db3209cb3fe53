from django.apps import AppConfig


class AssistantConfig(AppConfig):
    name = "assistant"
    verbose_name = "Research assistant"

    def ready(self):
        from assistant import signals  # noqa: F401
