from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = _("Chat")

    def ready(self):
        from celery.signals import worker_ready, worker_shutdown

        worker_ready.connect(_start_sweeping, weak=False)
        worker_shutdown.connect(_stop_sweeping, weak=False)


_sweeper = None


def _start_sweeping(**kwargs):
    # Each worker looks for replies whose worker died; ending one is a
    # conditional update, so several workers sweeping at once is safe.
    global _sweeper
    from chat.recovery import Sweeper

    _sweeper = Sweeper().start()


def _stop_sweeping(**kwargs):
    if _sweeper is not None:
        _sweeper.stop()
