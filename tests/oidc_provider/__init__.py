"""A real OpenID Connect provider for the sign-in tests.

`LoopbackProvider` runs provider.mjs (the `oidc-provider` package from npm) with
Node on a free loopback port, installing its packages with `npm ci` on first
use. Its issuer is on `localhost` while the apps under test are on
127.0.0.1 or `testserver`, so the two never share cookies. `authorize()`
plays a person at the provider's pages with plain HTTP.

Without Node and npm the tests that need it are skipped, unless
REQUIRE_OIDC_PROVIDER=1 turns that into a failure.
"""

import html
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

PROVIDER_DIR = Path(__file__).resolve().parent
CLIENT_ID = "research-assistant"
CLIENT_SECRET = "test-client-secret-1"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_installed():
    """Install the provider's packages unless the lock file's are in place."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        message = "Node.js and npm are needed for the OpenID Connect provider"
        if os.environ.get("REQUIRE_OIDC_PROVIDER") == "1":
            pytest.fail(message)
        pytest.skip(message)

    installed = PROVIDER_DIR / "node_modules" / ".package-lock.json"
    lock = PROVIDER_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return

    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PROVIDER_DIR,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci for the test provider failed:\n{result.stderr}")


class LoopbackProvider:
    def __init__(self, workdir, redirect_uris, post_logout_redirect_uris):
        self.port = free_port()
        self.issuer = f"http://localhost:{self.port}"
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.accounts_file = Path(workdir) / f"accounts-{self.port}.json"
        self.log_file = Path(workdir) / f"provider-{self.port}.log"
        self.redirect_uris = redirect_uris
        self.post_logout_redirect_uris = post_logout_redirect_uris
        self.process = None

    def start(self):
        ensure_installed()
        self.reset_accounts()
        env = dict(
            os.environ,
            PORT=str(self.port),
            ISSUER=self.issuer,
            CLIENT_ID=self.client_id,
            CLIENT_SECRET=self.client_secret,
            REDIRECT_URIS=",".join(self.redirect_uris),
            POST_LOGOUT_REDIRECT_URIS=",".join(self.post_logout_redirect_uris),
            ACCOUNTS_FILE=str(self.accounts_file),
        )
        with open(self.log_file, "w") as log:
            self.process = subprocess.Popen(
                ["node", "provider.mjs"],
                cwd=PROVIDER_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_ready()
        return self

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def _wait_until_ready(self, seconds=30):
        url = f"{self.issuer}/.well-known/openid-configuration"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the test provider exited:\n{self.log_file.read_text()}")
            try:
                requests.get(url, timeout=2).raise_for_status()
                return
            except requests.RequestException:
                time.sleep(0.2)
        pytest.fail(f"the test provider did not answer at {url}")

    def reset_accounts(self):
        self.accounts_file.write_text("{}")

    def set_account(self, login, **claims):
        """Claims the provider gives for `login` from its next answer on."""
        accounts = json.loads(self.accounts_file.read_text())
        accounts[login] = claims
        self.accounts_file.write_text(json.dumps(accounts))

    def authorize(self, url, login, consent=True):
        """Sign in as `login` at the provider, starting from the app's redirect.

        Returns the URL the provider sends the browser back to: the app's
        callback with a code, or with error=access_denied when `consent` is
        false and the person cancels instead.
        """
        browser = requests.Session()
        response = browser.get(url, allow_redirects=False, timeout=10)
        while True:
            if response.is_redirect:
                target = urljoin(response.url, response.headers["Location"])
                if not target.startswith(self.issuer):
                    return target
                response = browser.get(target, allow_redirects=False, timeout=10)
                continue

            response.raise_for_status()
            page = response.text
            if not consent:
                abort = re.search(r'href="([^"]*/abort)"', page).group(1)
                response = browser.get(
                    urljoin(response.url, html.unescape(abort)),
                    allow_redirects=False,
                    timeout=10,
                )
                continue

            action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))
            if 'name="login"' in page:
                form = {"prompt": "login", "login": login, "password": "any"}
            else:
                form = {"prompt": "consent"}
            response = browser.post(
                urljoin(response.url, action),
                data=form,
                allow_redirects=False,
                timeout=10,
            )
