"""Shared fixtures: the shared test material, the model simulator, a worker.

The suite runs in two configurations, chosen by the environment as the app
is: with DATABASE_URL and REDIS_URL (PostgreSQL, Redis, and a real Celery
worker process), and without them (SQLite, the in-memory layer, the embedded
worker thread). Fixtures here hide that difference from the tests.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache

from assistant import modelapi
from assistant.simulator.server import SimulatorConfig, SimulatorServer

REPO_DIR = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("SHARED_DIR", REPO_DIR.parent / "shared"))
REDIS_MODE = bool(django_settings.REDIS_URL)


@pytest.fixture(scope="session")
def shared_dir():
    """The read-only folder of shared test material beside the checkout.

    Outside CI a checkout may come without it; then the tests that need it
    are skipped, unless REQUIRE_SHARED=1 turns the absence into a failure.
    """
    if SHARED_DIR.is_dir():
        return SHARED_DIR
    if os.environ.get("REQUIRE_SHARED") == "1":
        pytest.fail(f"shared test material not found at {SHARED_DIR}")
    pytest.skip(f"shared test material not found at {SHARED_DIR}")


@pytest.fixture(scope="session")
def simulator():
    """The bundled model simulator on a free loopback port, fast settings."""
    server = SimulatorServer(
        host="127.0.0.1",
        port=0,
        config=SimulatorConfig(
            token_delay=0.002, first_token_delay=0.02, chunk_chars=6, keepalive=1.0
        ),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def model_api(settings, simulator):
    """Point the app at the simulator, with nothing cached from other tests."""
    settings.MODEL_API_BASE_URL = simulator.url
    settings.MODEL_API_KEY = ""
    cache.delete(modelapi.MODEL_LIST_CACHE_KEY)
    simulator.reset_stats()
    yield simulator
    # Scripts a test queued but did not use must not answer the next test.
    while simulator.take_script() is not None:
        pass


@pytest.fixture(scope="session")
def celery_worker(simulator, django_db_setup, django_db_blocker):
    """A Celery worker that writes replies, as the configuration calls for.

    With Redis: a separate `celery worker` process on the test database, as
    in production. Without: the embedded worker thread of this process.
    """
    if not REDIS_MODE:
        from assistant.embedded import start_embedded_worker

        start_embedded_worker()
        yield None
        return

    env = dict(os.environ)
    env["DATABASE_URL"] = _test_database_url()
    env["MODEL_API_BASE_URL"] = simulator.url
    env["STREAM_SAVE_INTERVAL"] = str(django_settings.STREAM_SAVE_INTERVAL)
    # Replies this worker writes queue no titles; a test that wants one
    # queues it from the test process (tests/chat/test_titling.py).
    env["AUTO_TITLES"] = "false"
    # As in this process (vision_engine_by_default).
    env["IMG2TEX_ENGINE"] = "vision"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "assistant",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "8",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=REPO_DIR,
        env=env,
    )
    _wait_for_worker(process)
    yield process
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def _test_database_url():
    from django.db import connection

    params = connection.settings_dict
    user = params.get("USER") or ""
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{params['NAME']}"


def _wait_for_worker(process, seconds=60):
    from assistant.celery import app

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the Celery worker exited with code {process.returncode}")
        if app.control.ping(timeout=0.5):
            return
    pytest.fail("the Celery worker did not answer a ping within a minute")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Close connections after each use in tests, and keep SQLite in a file.

    Consumers reach the database from a pool of threads; a connection kept
    open there would stop the test database from being dropped at the end.
    """
    django_settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    if django_settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        # Worker threads write side by side (the chunks of a polish job). An
        # in-memory SQLite database shares its cache between connections and
        # then fails at once on a locked table; a file waits for the lock.
        test_name = Path(tempfile.gettempdir()) / f"assistant-test-{os.getpid()}.db"
        django_settings.DATABASES["default"]["TEST"]["NAME"] = str(test_name)


@pytest.fixture(autouse=True)
def vision_engine_by_default(settings):
    """Formulas go to the (simulated) vision model unless a test asks for the
    offline engine, so that the tests of the vision path mean the same with
    the offline extra installed or not (tests/academic/test_ocr_engine.py)."""
    settings.IMG2TEX_ENGINE = "vision"


@pytest.fixture(autouse=True)
def no_auto_titles(settings):
    """A reply queues no title request unless its test asks for one."""
    settings.AUTO_TITLES = False


@pytest.fixture(autouse=True)
def plain_static_storage(settings):
    """Pages rendered in tests name static files without the collected manifest."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }
