"""The app's ASGI application under Daphne on a free port, in this process.

Daphne runs in a thread of the test process, so the API shares the tests'
database, settings, cache and admission controller with the code a test
calls directly (a chat reply, say), as the web and worker processes of a
deployment share PostgreSQL and Redis. Tests that use it need the database
with transaction=True, since the server's threads hold their own
connections.
"""

import threading
import time

import openai
import pytest
from django.contrib.auth.models import Group

from assistant.api.models import ApiKey
from tests.factories import make_user


@pytest.fixture(scope="session")
def api_server():
    """The base URL of the app's /v1, served by Daphne."""
    from daphne.server import Server
    from django.core.asgi import get_asgi_application

    server = Server(
        application=get_asgi_application(),
        endpoints=["tcp:port=0:interface=127.0.0.1"],
        signal_handlers=False,
        verbosity=0,
    )
    thread = threading.Thread(target=server.run, name="daphne", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.listening_addresses:
        if time.monotonic() > deadline:
            pytest.fail("Daphne did not start listening")
        time.sleep(0.05)

    host, port = server.listening_addresses[0]
    yield f"http://{host}:{port}"
    from twisted.internet import reactor

    reactor.callFromThread(server.stop)
    thread.join(timeout=5)


def make_key(user=None, group=None, **limits):
    """An API key and its full secret, as the keys page makes them."""
    user = user or make_user()
    key = ApiKey(name=limits.pop("name", "batch job"), user=user, group=group)
    for field, value in limits.items():
        setattr(key, field, value)
    raw_key = key.new_secret()
    key.save()
    return key, raw_key


@pytest.fixture
def team():
    return Group.objects.create(name="climate-lab")


@pytest.fixture
def client_for(api_server, model_api):
    """openai.OpenAI pointed at the app's /v1 with a key's secret."""

    def build(raw_key, **options):
        return openai.OpenAI(
            base_url=f"{api_server}/v1",
            api_key=raw_key,
            max_retries=0,
            default_headers={"Accept-Language": "en"},
            **options,
        )

    return build
