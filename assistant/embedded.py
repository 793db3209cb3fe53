"""The Celery worker of the embedded default, inside the web process.

Without Redis there is no broker another process could read, and the
in-memory channel layer reaches only consumers in the same process, so the
worker runs here: Celery's own WorkController on the in-memory transport,
with a pool of threads, started once in a background thread.
"""

import logging
import threading

from django.conf import settings

logger = logging.getLogger(__name__)

_worker = None
_worker_lock = threading.Lock()


def start_embedded_worker():
    global _worker
    with _worker_lock:
        if _worker is not None:
            return _worker

        from assistant.celery import app

        _worker = app.WorkController(
            pool_cls="threads",
            concurrency=settings.EMBEDDED_WORKER_THREADS,
            hostname="embedded@localhost",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
        )
        thread = threading.Thread(
            target=_worker.start, name="embedded-celery-worker", daemon=True
        )
        thread.start()
        logger.info(
            "embedded Celery worker started with %s threads",
            settings.EMBEDDED_WORKER_THREADS,
        )
        return _worker


def stop_embedded_worker():
    global _worker
    with _worker_lock:
        if _worker is None:
            return
        _worker.stop(in_sighandler=False, exitcode=0)
        _worker = None
