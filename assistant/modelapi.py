"""The one client for the OpenAI-compatible model API.

Chat, the academic workspace and any later feature go through here, so that
timeouts, retries and the way a stream is read and cut stay the same
everywhere. Requests are built by the openai SDK; the streamed body is read
as raw SSE lines (see assistant.streaming) because the SDK hides what this
app must tell apart: whether `[DONE]` arrived, and keep-alive comments.
"""

import logging
import socket
import threading
from contextlib import contextmanager
from typing import NamedTuple

import openai
from django.conf import settings
from django.core.cache import cache

from assistant import backends, failures

logger = logging.getLogger(__name__)

MODEL_LIST_CACHE_KEY = "modelapi:models"

_clients = {}
_clients_lock = threading.Lock()


def get_client(connection=None):
    """A shared SDK client for one backend (it pools connections).

    Without a connection, the default backend (MODEL_API_BASE_URL).
    """
    connection = connection or backends.default_connection()
    key = (
        connection.base_url,
        connection.api_key,
        settings.MODEL_API_READ_TIMEOUT,
        settings.MODEL_API_CONNECT_TIMEOUT,
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = openai.OpenAI(
                base_url=connection.base_url,
                # Local servers such as vLLM and Ollama accept any key, but the
                # SDK refuses to start without one.
                api_key=connection.api_key or "no-key",
                timeout=openai.Timeout(
                    settings.MODEL_API_READ_TIMEOUT,
                    connect=settings.MODEL_API_CONNECT_TIMEOUT,
                ),
                # A retried streaming request would start the reply over; the
                # caller decides what a failure means for the user instead.
                max_retries=0,
            )
            _clients[key] = client
        return client


def client_for_model(model):
    """The client of the backend that serves `model`."""
    return get_client(backends.connection_for_model(model))


def list_models():
    """The models the backends serve: dicts with `id`, `backend` and any extras."""
    return served_models().models


class ServedModels(NamedTuple):
    models: list
    # Names of the backends that could not be asked this time.
    unreachable: list


def served_models():
    """What every backend in use lists, and which of them did not answer.

    Cached briefly, so opening a page does not cost a request to each API.
    Raises only when there is no backend at all, or none answered.
    """
    cached = cache.get(MODEL_LIST_CACHE_KEY)
    if cached is not None:
        return ServedModels(*cached)

    in_use = backends.backends_in_use()
    if not in_use:
        backends.default_connection()  # raises ImproperlyConfigured

    models, unreachable, last_failure = [], [], None
    for backend in in_use:
        try:
            listed = _list_backend(backend)
        except Exception as exc:  # noqa: BLE001 - one server down hides only its models
            code, detail = failures.classify(exc)
            logger.warning(
                "backend %s: model list unavailable: %s %s", backend, code, detail
            )
            unreachable.append(backend.name)
            last_failure = exc
            continue
        models.extend(listed)

    if last_failure is not None and not models:
        raise last_failure
    cache.set(
        MODEL_LIST_CACHE_KEY, (models, unreachable), settings.MODEL_LIST_CACHE_SECONDS
    )
    return ServedModels(models, unreachable)


def _list_backend(backend):
    client = get_client(backends.connection_of(backend))
    page = client.with_options(max_retries=1, timeout=10.0).models.list()
    return [{**model.model_dump(), "backend": backend.name} for model in page.data]


class ChatStream:
    """An open streaming chat completion: its body lines and a way to cut it.

    `cut()` may be called from another thread while `lines()` blocks in a
    read: it shuts the socket down, which wakes the reader at once and lets the
    server see the disconnect (closing the file alone would do neither while a
    read is in progress).
    """

    def __init__(self, api_response):
        self._api_response = api_response
        self.http_response = api_response.http_response
        self.cut_requested = threading.Event()

    @property
    def status_code(self):
        return self.http_response.status_code

    def lines(self):
        return self._api_response.iter_lines()

    def cut(self):
        self.cut_requested.set()
        sock = self._socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                # Already closed by the other side; nothing left to cut.
                pass
        self.close()

    def close(self):
        try:
            self._api_response.close()
        except Exception:  # noqa: BLE001 - closing must never raise
            logger.debug("closing a model stream raised", exc_info=True)

    def _socket(self):
        stream = self.http_response.extensions.get("network_stream")
        if stream is None:
            return None
        try:
            return stream.get_extra_info("socket")
        except Exception:  # noqa: BLE001 - transport without a socket
            return None


@contextmanager
def open_chat_stream(model, messages, max_tokens=None, connection=None, **params):
    """Start a streaming chat completion and yield a ChatStream.

    The request goes to `connection`, by default the model's backend. HTTP
    errors before the body (401, 429, 400 for context overflow, ...) raise
    the SDK's typed exceptions, which carry the server's message.
    """
    request = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **params,
    }
    if max_tokens:
        request["max_tokens"] = max_tokens

    client = get_client(connection) if connection else client_for_model(model)
    completions = client.chat.completions
    with completions.with_streaming_response.create(**request) as api_response:
        stream = ChatStream(api_response)
        try:
            yield stream
        finally:
            stream.close()
