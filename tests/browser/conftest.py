"""The app as a researcher runs it, and a real Chromium to drive it.

`live_app` starts scripts/run.py (what `make run` runs) on a fresh database
and a free port, pointed at the test session's model simulator so tests can
script and observe the backend. With REDIS_URL set it runs Daphne and a
Celery worker as separate processes, on a Celery queue of its own so the
test session's worker never takes its tasks.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings

REPO_DIR = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
DEMO_PASSWORD = "browser-test-password-1"
# Flags for a headless Chromium on a machine with no outside network: no
# sandbox as root, and none of the background connections it would try.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_http(url, process, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the app did not answer at {url}")


class FreshPostgresDatabase:
    """A database of its own for the live app, dropped afterwards."""

    def __init__(self, url):
        import dj_database_url

        self.params = dj_database_url.parse(url)
        self.name = f"browser_{uuid.uuid4().hex[:8]}"

    def _admin(self):
        import psycopg

        return psycopg.connect(
            host=self.params["HOST"] or "127.0.0.1",
            port=self.params["PORT"] or 5432,
            user=self.params["USER"] or None,
            password=self.params["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
        )

    def create(self):
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        user = self.params["USER"]
        password = f":{self.params['PASSWORD']}" if self.params["PASSWORD"] else ""
        auth = f"{user}{password}@" if user else ""
        host = self.params["HOST"] or "127.0.0.1"
        port = self.params["PORT"] or 5432
        return f"postgres://{auth}{host}:{port}/{self.name}"

    def drop(self):
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


LIVE_APP_LOGS = []
LIVE_APP_ENVS = {}


def live_manage(base_url, *args):
    """Run a management command against the live app's own database."""
    subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_DIR,
        env=LIVE_APP_ENVS[base_url],
        check=True,
        capture_output=True,
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Show the end of the live app's log under a failed browser test."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and LIVE_APP_LOGS:
        log = LIVE_APP_LOGS[-1]
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-60:]
            report.sections.append(("live app log (last lines)", "\n".join(tail)))


@pytest.fixture(scope="session")
def chromium_path():
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"Chromium not found at {CHROMIUM}")
    pytest.skip(f"Chromium not found at {CHROMIUM} (install Debian's chromium)")


@pytest.fixture(scope="session")
def live_app(simulator, tmp_path_factory, chromium_path):
    data_dir = tmp_path_factory.mktemp("live-app")
    with _running_app(simulator, data_dir, _free_port()) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def live_oidc_app(simulator, tmp_path_factory, chromium_path):
    """A second app that signs in through a loopback OpenID Connect provider.

    The provider is on `localhost`, the app on 127.0.0.1, so their cookies
    stay apart as they would on two hosts.
    """
    from tests.oidc_provider import LoopbackProvider

    data_dir = tmp_path_factory.mktemp("live-oidc-app")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    provider = LoopbackProvider(
        data_dir, [f"{base_url}/oidc/callback/"], [f"{base_url}/accounts/login/"]
    ).start()
    oidc_env = {
        "OIDC_ISSUER": provider.issuer,
        "OIDC_CLIENT_ID": provider.client_id,
        "OIDC_CLIENT_SECRET": provider.client_secret,
    }
    try:
        with _running_app(simulator, data_dir, port, oidc_env):
            yield base_url, provider
    finally:
        provider.stop()


@contextlib.contextmanager
def _running_app(simulator, data_dir, port, extra_env=None):
    env = dict(os.environ)
    env.update(
        PORT=str(port),
        DATA_DIR=str(data_dir),
        STATIC_ROOT=str(data_dir / "static"),
        MODEL_API_BASE_URL=simulator.url,
        DEMO_PASSWORD=DEMO_PASSWORD,
        CELERY_QUEUE=f"browser-{uuid.uuid4().hex[:8]}",
        CHANNELS_PREFIX=f"browser-{uuid.uuid4().hex[:8]}",
        USING_SIMULATOR="1",
        # One more try after a 429 or 503, so that the fault tests end soon.
        MODEL_API_BUSY_RETRIES="1",
        # Title requests after each first answer would share the simulator
        # with the test that follows; tests/chat/test_titling.py covers them.
        AUTO_TITLES="false",
        # The convert tests check the simulated vision model's answers.
        IMG2TEX_ENGINE="vision",
    )
    env.update(extra_env or {})
    database = None
    if django_settings.DATABASE_URL:
        database = FreshPostgresDatabase(django_settings.DATABASE_URL)
        env["DATABASE_URL"] = database.create()

    log = open(data_dir / "app.log", "w")
    process = subprocess.Popen(
        [sys.executable, "scripts/run.py"],
        cwd=REPO_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    LIVE_APP_LOGS.append(data_dir / "app.log")
    LIVE_APP_ENVS[base_url] = env
    try:
        _wait_for_http(f"{base_url}/accounts/login/", process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        if database is not None:
            database.drop()
        if os.environ.get("KEEP_BROWSER_LOGS") != "1":
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_app, simulator):
    simulator.reset_stats()
    context = browser.new_context(base_url=live_app, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(20000)
    page.dialogs = []
    page.on(
        "dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss())
    )
    yield page
    context.close()
    while simulator.take_script() is not None:
        pass


def sign_in(page, password=DEMO_PASSWORD, username="demo"):
    page.goto("/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit].primary")
    # The composer is there before the page's script runs; Enter sends
    # only once it has.
    page.wait_for_selector("html[data-chat-ready]", state="attached")
