"""Health and readiness endpoints for load balancers and process managers.

/healthz answers as soon as the process serves requests. /readyz also
checks what a request needs: the database with every migration applied,
the cache, and, in production, the Redis that carries the channel layer and
the Celery broker. Both are open without signing in, so they say no more
than which component fails; the reason goes to the log.
"""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

# A probe must answer well within a load balancer's own timeout.
CHECK_TIMEOUT_SECONDS = 2.0
READY_CACHE_KEY = "health:ready"


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    failing = [name for name, check in _checks() if not _passes(name, check)]
    if failing:
        return JsonResponse({"status": "failing", "failing": failing}, status=503)
    return JsonResponse({"status": "ok"})


def _checks():
    checks = [("database", _check_database), ("migrations", _check_migrations)]
    checks.append(("cache", _check_cache))
    if settings.REDIS_URL:
        checks.append(("redis", _check_redis))
        checks.append(("broker", _check_broker))
    return checks


def _passes(name, check):
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        logger.warning("readiness check %s failed: %r", name, exc)
        return False
    return True


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_migrations():
    executor = MigrationExecutor(connection)
    targets = executor.loader.graph.leaf_nodes()
    unapplied = executor.migration_plan(targets)
    if unapplied:
        raise RuntimeError(f"{len(unapplied)} migrations not applied")


def _check_cache():
    cache.set(READY_CACHE_KEY, "1", timeout=10)
    if cache.get(READY_CACHE_KEY) != "1":
        raise RuntimeError("the cache did not keep a value")


def _check_redis():
    # The channel layer's own Redis; channels_redis has no ping of its own.
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()


def _check_broker():
    from assistant.celery import app

    with app.connection_for_write(url=settings.REDIS_URL) as broker:
        broker.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_SECONDS)
