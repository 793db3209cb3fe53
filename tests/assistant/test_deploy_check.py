"""`manage.py check --deploy` passes on the production settings.

Run in a fresh process, as the settings are read from the environment once
at start-up: the values an operator sets behind TLS, with PostgreSQL and
Redis as CI gives them (the check itself connects to neither).
"""

import os
import secrets
import subprocess
import sys

from tests.conftest import REPO_DIR

PRODUCTION_ENV = {
    "SECRET_KEY": secrets.token_urlsafe(64),
    "SECURE_COOKIES": "true",
    "ALLOWED_HOSTS": "assistant.example.edu",
    "CSRF_TRUSTED_ORIGINS": "https://assistant.example.edu",
    "TRUSTED_PROXY_COUNT": "1",
    "DATABASE_URL": os.environ.get(
        "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/assistant"
    ),
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    # The check needs no worker; none is started in the checking process.
    "ASSISTANT_EMBEDDED_WORKER": "0",
}


def run_deploy_check(**overrides):
    env = {**os.environ, **PRODUCTION_ENV, **overrides}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_passes_with_the_production_settings():
    result = run_deploy_check()

    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_it_fails_when_the_site_is_served_without_tls_settings():
    """The same check catches a weakened configuration, so it cannot pass
    by checking nothing."""
    result = run_deploy_check(SECURE_COOKIES="false")

    assert result.returncode != 0
    assert "security.W012" in result.stderr  # SESSION_COOKIE_SECURE
    assert "security.W004" in result.stderr  # no HSTS


def test_it_fails_on_a_short_secret_key():
    result = run_deploy_check(SECRET_KEY="short")

    assert result.returncode != 0
    assert "security.W009" in result.stderr


def test_it_warns_about_the_redirect_when_no_proxy_is_trusted():
    """Without a trusted proxy the app cannot tell HTTPS from HTTP behind
    one, so it does not redirect on its own, and the check says so."""
    result = run_deploy_check(TRUSTED_PROXY_COUNT="0")

    assert result.returncode != 0
    assert "security.W008" in result.stderr
