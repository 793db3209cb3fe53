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

import openai
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

MODEL_LIST_CACHE_KEY = "modelapi:models"

_clients = {}
_clients_lock = threading.Lock()


def get_client():
    """A shared SDK client for the configured API (it pools connections)."""
    base_url = settings.MODEL_API_BASE_URL
    if not base_url:
        raise ImproperlyConfigured(
            "MODEL_API_BASE_URL is not set: point it at an OpenAI-compatible "
            "API, or start the app with `make run` to use the bundled simulator."
        )

    key = (
        base_url,
        settings.MODEL_API_KEY,
        settings.MODEL_API_READ_TIMEOUT,
        settings.MODEL_API_CONNECT_TIMEOUT,
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = openai.OpenAI(
                base_url=base_url,
                # Local servers such as vLLM and Ollama accept any key, but the
                # SDK refuses to start without one.
                api_key=settings.MODEL_API_KEY or "no-key",
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


def list_models():
    """The models the API serves: a list of dicts with `id` and any extras.

    Cached briefly, so opening a page does not cost a request to the API.
    """
    cached = cache.get(MODEL_LIST_CACHE_KEY)
    if cached is not None:
        return cached

    page = get_client().with_options(max_retries=1, timeout=10.0).models.list()
    models = [model.model_dump() for model in page.data]
    cache.set(MODEL_LIST_CACHE_KEY, models, settings.MODEL_LIST_CACHE_SECONDS)
    return models


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
def open_chat_stream(model, messages, max_tokens=None, **params):
    """Start a streaming chat completion and yield a ChatStream.

    HTTP errors before the body (401, 429, 400 for context overflow, ...)
    raise the SDK's typed exceptions, which carry the server's message.
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

    completions = get_client().chat.completions
    with completions.with_streaming_response.create(**request) as api_response:
        stream = ChatStream(api_response)
        try:
            yield stream
        finally:
            stream.close()
