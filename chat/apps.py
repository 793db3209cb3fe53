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
    # conditional update, so several workers sweeping at once is safe. The
    # embedded worker dies only with its process, and then no sweeper would
    # be left either: a page that opens the conversation ends such a reply.
    global _sweeper
    from django.conf import settings

    from chat.recovery import Sweeper

    if settings.EMBEDDED_WORKER:
        return

    _sweeper = Sweeper().start()


def _stop_sweeping(**kwargs):
    if _sweeper is not None:
        _sweeper.stop()
