"""An OpenAI-compatible model server for demos and tests, standard library only.

In-process, as the tests use it::

    server = SimulatorServer(host="127.0.0.1", port=0, config=SimulatorConfig())
    server.start()
    client = openai.OpenAI(base_url=server.url, api_key="x")
    ...
    server.stop()

In the foreground: ``python manage.py simulate_model --port 8001``.

Endpoints:

    GET  /v1/models             the served models, with vLLM's max_model_len
    POST /v1/chat/completions   replies, streamed as SSE when "stream" is true
    POST /v1/embeddings         a vector per input, the same for the same text,
                                for any model id (none is listed, so that the
                                chat's model list stays as it is)
    GET  /health                {"status": "ok"}, for readiness checks
    GET  /sim/stats             counters, recent request bodies, disconnect
                                times, when tagged replies began reasoning
    GET  /sim/requests/last     the body of the last chat request, as received
    POST /sim/reset             clears the counters and the recent requests

Each model sends its reasoning the way one family of real servers does:

    deepseek-r1            delta.reasoning_content (DeepSeek API, older vLLM)
    deepseek-r1-vllm       delta.reasoning (newer vLLM, OpenRouter, Ollama /v1)
    deepseek-r1-tags       "<think>...</think>" at the start of content
    deepseek-r1-prefilled  content carries the reasoning, "</think>", the answer;
                           the chat template pre-filled "<think>", so it never
                           arrives
    deepseek-v3            no reasoning
    qwen2.5-vl-sim         no reasoning; reads images (assistant.simulator.vision)

A prompt holding a <paper> block (paper reading) is answered from its
passages, each with its reference (assistant.simulator.reading).

A non-streaming reply puts the reasoning in message.reasoning_content or
message.reasoning (the same field name as the stream), or inline in content.

Per-request settings, so a test or a demo can pick the behaviour through the
whole app: a directive anywhere in the last user message, removed before the
question is echoed back,

    [[sim delay=0.5 first=2 format=tags chunk=1 words=300]]

or the same keys in an extra body field, "simulator": {"delay": 0.5, ...}.
The directive wins over the body field, which wins over the server config.

    delay   seconds between chunks
    first   seconds before the first chunk; keep-alive comments meanwhile
    chunk   characters per chunk
    format  reasoning_content, reasoning, tags, prefilled or none
    words   lengthen the answer by about this many words of filler prose
    fault   act out a failure of a real server (see assistant.simulator.faults)
    damage  damage the answer to a polishing request (assistant.simulator.polish)
    fails   fail only the first N requests with the same messages (HTTP faults)
    retry_after  the Retry-After seconds of http429 and http503
    tag     a name for the request, up to 64 of A-Z a-z 0-9 _ -; it changes
            nothing in the reply, but stats["first_reasoning_sent"][tag] then
            holds the time.monotonic() at which the reply's first reasoning
            chunk was written and flushed (streamed replies only; the last
            1000 tags are kept), so a benchmark can time what comes after

Thinking is switched as real servers switch it: `reasoning_effort: "none"`
(Ollama's /v1) or `chat_template_kwargs: {"enable_thinking": false}` (vLLM
with a Qwen3 template) sends the answer alone, with no reasoning and no
think tags, in every format. Every model honours both here, where a real
R1 thinks regardless. reasoning_effort other than "high", "medium", "low" or
"none" is refused with 400, as Ollama refuses it; a temperature outside 0-2
with 400, as OpenAI's API does. Fields the simulator does not know are
ignored with a warning in its log, as vLLM ignores them.

Token counts are rough: each chunk is one completion token, and the prompt is
estimated from the message lengths (replies.estimate_tokens). max_tokens, or
max_completion_tokens, cuts the reply after that many chunks with
finish_reason "length", in the middle of the reasoning if need be.

In capacity mode (SimulatorConfig(capacity_mode=True), or --capacity-mode)
streamed replies are paced by the load instead of `delay`: concurrent
replies share a total rate that levels off, and too many long prompts stall
(see assistant.simulator.capacity).

A code analysis's requests and follow-up questions are answered from their
prompt (assistant.simulator.codereading), so a test sees which file:line
references reached the model.

Tests can also script the next chat reply: queue_events() replays a
stream-cases entry's events verbatim, queue_error() answers with an HTTP error.
"""

import hashlib
import hmac
import json
import logging
import math
import re
import selectors
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from assistant.simulator import (
    capacity,
    codereading,
    faults,
    polish,
    reading,
    replies,
    vision,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    reply_format: str
    max_model_len: int
    # Accepts image_url parts (see assistant.simulator.vision).
    reads_images: bool = False


MODELS = {
    "deepseek-r1": ServedModel("reasoning_content", 16384),
    "deepseek-r1-vllm": ServedModel("reasoning", 16384),
    "deepseek-r1-tags": ServedModel("tags", 16384),
    "deepseek-r1-prefilled": ServedModel("prefilled", 16384),
    "deepseek-v3": ServedModel("none", 65536),
    "qwen2.5-vl-sim": ServedModel("none", 32768, reads_images=True),
}
FORMATS = ("reasoning_content", "reasoning", "tags", "prefilled", "none")
FIELD_FORMATS = ("reasoning_content", "reasoning")

# Fixed, so that two listings of the models compare equal.
MODELS_CREATED = 1735689600

# (type, minimum, maximum) of each numeric per-request setting.
NUMERIC_SETTINGS = {
    "delay": (float, 0, 600),
    "first": (float, 0, 600),
    "chunk": (int, 1, 100_000),
    "words": (int, 0, 200_000),
    "fails": (int, 1, 1000),
    "retry_after": (int, 0, 3600),
}
DIRECTIVE_PATTERN = re.compile(r"\[\[sim\b(?P<settings>[^\]]*)\]\]")
TAG_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Chat templates add role markers and separators around every message.
TOKENS_PER_MESSAGE = 4
RECENT_LIMIT = 50
FIRST_REASONING_LIMIT = 1000
MAX_BODY_BYTES = 16 * 1024 * 1024
IDLE_TIMEOUT_SECONDS = 60
STOP_POLL_SECONDS = 0.2
# How often a stalled request in capacity mode asks whether it may go on.
CAPACITY_STALL_POLL_SECONDS = 0.05
# How often serve_forever checks for shutdown(); stop() waits up to this long.
SHUTDOWN_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class SimulatorConfig:
    """Server-wide defaults; each request may override the reply settings."""

    token_delay: float = 0.03
    first_token_delay: float = 0.3
    chunk_chars: int = 3
    keepalive: float = 5.0
    api_key: str | None = None
    # Pace streamed replies by the load (assistant.simulator.capacity)
    # instead of the fixed delay; the time scale shrinks its intervals, so
    # that 0.02 runs 50 times faster than the measured server.
    capacity_mode: bool = False
    capacity_time_scale: float = 1.0
    # The models this server serves, as {id: ServedModel}; None serves
    # MODELS. A test of several backends gives each server its own.
    models: dict | None = None

    @property
    def served(self):
        return MODELS if self.models is None else self.models

    def __post_init__(self):
        if self.token_delay < 0 or self.first_token_delay < 0:
            raise ValueError("delays must not be negative")
        if self.chunk_chars < 1:
            raise ValueError("chunk_chars must be at least 1")
        if self.keepalive <= 0:
            raise ValueError("keepalive must be a positive number of seconds")
        if self.capacity_time_scale <= 0:
            raise ValueError("capacity_time_scale must be positive")


@dataclass(frozen=True)
class ReplySettings:
    delay: float
    first: float
    chunk: int
    format: str
    words: int = 0
    tag: str | None = None
    fault: str | None = None
    fails: int | None = None
    retry_after: int | None = None
    damage: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    settings: ReplySettings
    question: str
    prompt_tokens: int
    # Set for requests with images: the whole answer, instead of an echo.
    answer: str | None = None
    # False when the request switched thinking off.
    thinking: bool = True


@dataclass(frozen=True)
class Piece:
    """One chunk of a reply: one token, sent in one delta field."""

    field: str
    text: str
    is_reasoning: bool


@dataclass(frozen=True)
class Reply:
    pieces: list
    finish_reason: str
    reply_format: str

    def usage(self, prompt_tokens):
        completion_tokens = len(self.pieces)
        reasoning_tokens = sum(1 for piece in self.pieces if piece.is_reasoning)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        }

    def message(self):
        content = "".join(p.text for p in self.pieces if p.field == "content")
        message = {"role": "assistant", "content": content or None}
        if self.reply_format in FIELD_FORMATS:
            field = self.reply_format
            message[field] = "".join(p.text for p in self.pieces if p.field == field)
        return message


@dataclass(frozen=True)
class ScriptedStream:
    """Events to send verbatim, shaped like an entry of stream-cases."""

    events: list
    framing: str


@dataclass(frozen=True)
class Envelope:
    """The id, timestamp and model that every chunk of one reply repeats."""

    id: str
    created: int
    model: str

    @classmethod
    def for_model(cls, model):
        return cls(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model)

    def chunk(self, delta, finish_reason=None):
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def usage_chunk(self, usage):
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage}

    def completion(self, reply, usage):
        choice = {
            "index": 0,
            "message": reply.message(),
            "logprobs": None,
            "finish_reason": reply.finish_reason,
        }
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage}

    def _head(self, kind):
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
        }


class RequestError(Exception):
    """A refused request, answered with an OpenAI-style error body."""

    def __init__(self, status, message, error_type="invalid_request_error", code=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.headers = {}

    def payload(self):
        error = {
            "message": self.message,
            "type": self.error_type,
            "param": None,
            "code": self.code,
        }
        return {"error": error}


class ClientGone(Exception):
    """The client closed the connection, or sent less than it announced."""


class ServerStopping(Exception):
    """stop() was called while a reply was still being generated."""


def model_listing(served=None):
    served_models = MODELS if served is None else served
    models = [
        {
            "id": name,
            "object": "model",
            "created": MODELS_CREATED,
            "owned_by": "simulator",
            "root": name,
            "parent": None,
            "max_model_len": served.max_model_len,
        }
        for name, served in served_models.items()
    ]
    return {"object": "list", "data": models}


EMBEDDING_DIMENSIONS = 8


def embedding_response(body):
    """Unit vectors drawn from a hash of each input: equal texts, equal vectors."""
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not texts:
        raise RequestError(400, "input must be a string or a list")

    dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
    data = []
    tokens = 0
    for index, text in enumerate(texts):
        text = text if isinstance(text, str) else " ".join(map(str, text))
        tokens += replies.estimate_tokens(text)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": _vector(text, dimensions),
            }
        )
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _vector(text, dimensions):
    digest = hashlib.sha256(text.encode()).digest()
    values = [digest[i % len(digest)] - 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]


def message_text(message):
    content = message.get("content")
    if isinstance(content, str):
        return content

    # Content may also be a list of parts, as in OpenAI's multimodal format.
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        return "".join(text for text in texts if isinstance(text, str))
    return ""


def estimate_prompt_tokens(messages):
    return sum(
        replies.estimate_tokens(message_text(message)) + TOKENS_PER_MESSAGE
        for message in messages
    )


def read_directives(text):
    """Settings from the [[sim ...]] directives in text, and the text without them."""
    settings = {}
    for match in DIRECTIVE_PATTERN.finditer(text):
        for pair in match.group("settings").replace(",", " ").split():
            key, separator, value = pair.partition("=")
            if not separator:
                raise RequestError(
                    400, f"Simulator directive {match.group(0)!r}: expected key=value"
                )
            settings[key] = value

    return settings, DIRECTIVE_PATTERN.sub("", text).strip()


def clean_settings(raw):
    """Checked and converted per-request settings; RequestError on a bad one."""
    cleaned = {}
    for key, value in raw.items():
        if key == "format":
            if value not in FORMATS:
                raise RequestError(400, f"Simulator format must be one of {FORMATS}")
            cleaned[key] = value
            continue

        if key == "fault":
            if value not in faults.FAULTS:
                raise RequestError(
                    400, f"Simulator fault must be one of {sorted(faults.FAULTS)}"
                )
            cleaned[key] = value
            continue

        if key == "damage":
            cleaned[key] = polish.check_damage(value, RequestError)
            continue

        if key == "tag":
            if not isinstance(value, str) or not TAG_PATTERN.fullmatch(value):
                raise RequestError(400, "Simulator tag must be 1-64 of A-Z a-z 0-9 _ -")
            cleaned[key] = value
            continue

        if key not in NUMERIC_SETTINGS:
            raise RequestError(400, f"Unknown simulator setting {key!r}")
        cleaned[key] = _read_number(key, value, *NUMERIC_SETTINGS[key])

    return cleaned


def _read_number(key, value, kind, minimum, maximum):
    problem = f"Simulator setting {key} must be between {minimum} and {maximum}"
    if isinstance(value, bool):
        raise RequestError(400, problem)

    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise RequestError(400, problem) from None

    # The negated comparison also rejects NaN.
    if not minimum <= number <= maximum:
        raise RequestError(400, problem)
    return number


def _read_max_tokens(body):
    # max_completion_tokens is OpenAI's newer name and takes precedence.
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(400, f"{key} must be a positive integer")
        return value
    return None


REASONING_EFFORTS = ("high", "medium", "low", "none")
KNOWN_FIELDS = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "chat_template_kwargs",
    "simulator",
}


def _read_thinking(body):
    """Whether the request leaves thinking on, checked as the servers check it."""
    thinking = True
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_EFFORTS:
            raise RequestError(
                400,
                f"invalid reasoning value: {effort!r} (must be "
                '"high", "medium", "low", or "none")',
            )
        thinking = effort != "none"

    template_kwargs = body.get("chat_template_kwargs")
    if template_kwargs is not None:
        if not isinstance(template_kwargs, dict):
            raise RequestError(400, "chat_template_kwargs must be an object")
        if template_kwargs.get("enable_thinking") is False:
            thinking = False
    return thinking


def _check_temperature(body):
    value = body.get("temperature")
    if value is None:
        return
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    # The negated comparison also rejects NaN.
    if not is_number or not 0 <= value <= 2:
        raise RequestError(400, "temperature must be a number from 0 to 2")


def _warn_ignored_fields(body):
    ignored = sorted(set(body) - KNOWN_FIELDS)
    if ignored:
        logger.warning(
            "The following fields were present in the request but ignored: %s",
            ignored,
        )


def _last_user_text(messages):
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def parse_chat_request(body, config):
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object")

    model = body.get("model")
    served = config.served
    if not isinstance(model, str) or model not in served:
        raise RequestError(
            404, f"The model `{model}` does not exist.", code="model_not_found"
        )

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list")
    if not all(isinstance(message, dict) for message in messages):
        raise RequestError(400, "each item of messages must be an object")

    body_settings = body.get("simulator") or {}
    if not isinstance(body_settings, dict):
        raise RequestError(400, "simulator must be an object of settings")
    thinking = _read_thinking(body)
    _check_temperature(body)
    _warn_ignored_fields(body)

    directive_settings, question = read_directives(_last_user_text(messages))
    defaults = ReplySettings(
        delay=config.token_delay,
        first=config.first_token_delay,
        chunk=config.chunk_chars,
        format=served[model].reply_format,
    )
    overrides = clean_settings({**body_settings, **directive_settings})
    settings = replace(defaults, **overrides)

    if settings.fault in faults.HTTP_FAULTS and settings.fails is None:
        raise faults.http_error(
            settings.fault,
            estimate_prompt_tokens(messages),
            RequestError,
            settings.retry_after,
        )

    try:
        image_answer = vision.reply_for(messages, served[model].reads_images)
    except vision.ImageError as error:
        raise RequestError(400, f"Invalid image: {error}") from None

    stream_options = body.get("stream_options")
    include_usage = (
        isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    )
    return ChatRequest(
        model=model,
        stream=body.get("stream") is True,
        include_usage=include_usage,
        max_tokens=_read_max_tokens(body),
        settings=settings,
        question=question,
        prompt_tokens=estimate_prompt_tokens(messages),
        answer=(
            image_answer
            or reading.reply_for(messages)
            or codereading.answer_for(messages)
        ),
        thinking=thinking,
    )


def _split(field, text, is_reasoning, size):
    return [
        Piece(field, text[start : start + size], is_reasoning)
        for start in range(0, len(text), size)
    ]


def build_reply(chat):
    settings = chat.settings
    reasoning = replies.build_reasoning(chat.question)
    # A picture, a titling request or a <text> block to edit gets its own
    # answer; anything else the usual reply.
    answer = (
        chat.answer
        or replies.build_title(chat.question)
        or polish.answer_for(chat.question, settings.damage)
    )
    if answer is None:
        answer = replies.build_answer(chat.question, settings.words)

    if not chat.thinking:
        thinking = []
    elif settings.format in FIELD_FORMATS:
        thinking = _split(settings.format, reasoning, True, settings.chunk)
    elif settings.format == "tags":
        tagged = f"<think>\n{reasoning}\n</think>\n\n"
        thinking = _split("content", tagged, True, settings.chunk)
    elif settings.format == "prefilled":
        thinking = _split("content", f"{reasoning}\n</think>\n\n", True, settings.chunk)
    else:
        thinking = []
    pieces = thinking + _split("content", answer, False, settings.chunk)

    if chat.max_tokens is not None and len(pieces) > chat.max_tokens:
        return Reply(pieces[: chat.max_tokens], "length", settings.format)
    return Reply(pieces, "stop", settings.format)


class SimulatorStats:
    """Counters shared by the handler threads; snapshot() returns a copy."""

    OUTCOMES = ("completed", "disconnected", "rejected", "aborted", "failed")

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self.reset()

    def reset(self):
        # Requests still running keep counting as active.
        with self._lock:
            self._counters = dict.fromkeys(
                ("requests", "paced_tokens") + self.OUTCOMES, 0
            )
            self._max_active = self._active
            self._recent_requests = deque(maxlen=RECENT_LIMIT)
            self._disconnect_times = deque(maxlen=RECENT_LIMIT)
            self._first_reasoning_sent = {}

    def record_request(self):
        with self._lock:
            self._counters["requests"] += 1

    def count_paced_token(self):
        """One token of a reply paced by the capacity model went out."""
        with self._lock:
            self._counters["paced_tokens"] += 1

    def remember(self, body):
        with self._lock:
            self._recent_requests.append(body)

    def begin(self):
        with self._lock:
            self._active += 1
            self._max_active = max(self._max_active, self._active)

    def end(self, outcome):
        with self._lock:
            self._active -= 1
        self.count(outcome)

    def count(self, outcome):
        with self._lock:
            self._counters[outcome] += 1
            if outcome == "disconnected":
                self._disconnect_times.append(time.monotonic())

    def record_first_reasoning(self, tag, sent_at):
        with self._lock:
            # Re-inserted, so that a reused tag counts as the newest.
            self._first_reasoning_sent.pop(tag, None)
            self._first_reasoning_sent[tag] = sent_at
            if len(self._first_reasoning_sent) > FIRST_REASONING_LIMIT:
                oldest = next(iter(self._first_reasoning_sent))
                del self._first_reasoning_sent[oldest]

    def last_request(self):
        with self._lock:
            return self._recent_requests[-1] if self._recent_requests else None

    def snapshot(self):
        with self._lock:
            disconnect_times = list(self._disconnect_times)
            last_disconnect_at = disconnect_times[-1] if disconnect_times else None
            return {
                **self._counters,
                "active": self._active,
                "max_active": self._max_active,
                "recent_requests": list(self._recent_requests),
                "disconnect_times": disconnect_times,
                "last_disconnect_at": last_disconnect_at,
                "first_reasoning_sent": dict(self._first_reasoning_sent),
            }


class SimulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ModelSimulator/1.0"
    # A socket timeout, so that a client stalling mid-request frees its thread.
    timeout = IDLE_TIMEOUT_SECONDS

    @property
    def simulator(self):
        return self.server.simulator

    def do_GET(self):
        routes = {
            "/v1/models": self._list_models,
            "/health": self._show_health,
            "/sim/stats": self._show_stats,
            "/sim/requests/last": self._show_last_request,
        }
        self._dispatch(routes)

    def do_POST(self):
        routes = {
            "/v1/chat/completions": self._chat_completions,
            "/v1/embeddings": self._embeddings,
            "/sim/reset": self._reset_stats,
        }
        self._dispatch(routes)

    def log_message(self, message_format, *args):
        # Replaces http.server's access line on stderr; chat requests get their
        # own INFO summary instead.
        logger.debug("%s %s", self.address_string(), message_format % args)

    def _dispatch(self, routes):
        path = urlsplit(self.path).path.rstrip("/")
        view = routes.get(path)
        try:
            if view is None:
                # Any request body stays unread, so the connection cannot be reused.
                self.close_connection = True
                raise RequestError(404, f"No route for {path}", code="not_found")
            view()
        except RequestError as error:
            self._send_error(error)
        except ClientGone:
            self.close_connection = True

    def _list_models(self):
        self._check_api_key()
        self._send_json(200, model_listing(self.simulator.config.served))

    def _show_health(self):
        self._send_json(200, {"status": "ok"})

    def _show_stats(self):
        self._send_json(200, self.simulator.stats)

    def _show_last_request(self):
        body = self.simulator.stats_recorder.last_request()
        if body is None:
            raise RequestError(404, "No chat request received yet", code="not_found")
        self._send_json(200, body)

    def _reset_stats(self):
        self._read_body()
        self.simulator.reset_stats()
        self._send_json(200, {"status": "ok"})

    def _embeddings(self):
        self._check_api_key()
        body = self._read_json_body()
        self._send_json(200, embedding_response(body))

    def _chat_completions(self):
        stats = self.simulator.stats_recorder
        stats.record_request()

        body = None
        try:
            self._check_api_key()
            body = self._read_json_body()
            stats.remember(body)
            script = self.simulator.take_script()
            if isinstance(script, RequestError):
                raise script
            chat = None if script else parse_chat_request(body, self.simulator.config)
            if chat is not None:
                chat = self.simulator.fail_first_requests(chat, body)
        except RequestError as error:
            stats.count("rejected")
            self._log_chat(body, "-", f"rejected {error.status}")
            self._send_error(error)
            return
        except ClientGone:
            stats.count("disconnected")
            self.close_connection = True
            return

        stats.begin()
        outcome = "failed"
        try:
            outcome = self._answer_chat(script, chat)
        finally:
            stats.end(outcome)
            reply_format = "script" if script else chat.settings.format
            self._log_chat(body, reply_format, outcome)

    def _answer_chat(self, script, chat):
        """Send the reply, scripted or generated; return how it ended."""
        try:
            if script:
                self._replay(script)
            elif chat.stream:
                self._stream_reply(chat)
            else:
                self._send_reply(chat)
        except ClientGone:
            self.close_connection = True
            return "disconnected"
        except ServerStopping:
            self.close_connection = True
            return "aborted"
        return "completed"

    def _log_chat(self, body, reply_format, outcome):
        body = body if isinstance(body, dict) else {}
        logger.info(
            "Simulated chat: model=%s stream=%s format=%s outcome=%s",
            body.get("model"),
            body.get("stream") is True,
            reply_format,
            outcome,
        )

    def _stream_reply(self, chat):
        if not self.simulator.config.capacity_mode:
            self._stream_paced_reply(chat, None)
            return
        with self.simulator.capacity.serving(chat.prompt_tokens) as request:
            self._stream_paced_reply(chat, request)

    def _stream_paced_reply(self, chat, capacity_request):
        reply = build_reply(chat)
        envelope = Envelope.for_model(chat.model)

        self._start_event_stream()
        self._pause(chat.settings.first)
        if chat.settings.fault:
            faults.stream_with_fault(self, chat, reply, envelope)
            return
        if capacity_request is not None:
            self._wait_out_stall(capacity_request)
        self._send_event(envelope.chunk({"role": "assistant", "content": ""}))

        stats = self.simulator.stats_recorder
        tag_to_record = chat.settings.tag
        last_index = len(reply.pieces) - 1
        for index, piece in enumerate(reply.pieces):
            if capacity_request is not None:
                self._pause_for_capacity(capacity_request)
            elif index:
                self._pause(chat.settings.delay)
            finish_reason = reply.finish_reason if index == last_index else None
            # Stamped before the write: once the bytes are out, the client
            # may read them before this thread runs again.
            sent_at = time.monotonic()
            self._send_event(envelope.chunk({piece.field: piece.text}, finish_reason))
            if capacity_request is not None:
                stats.count_paced_token()
            if tag_to_record and piece.is_reasoning:
                stats.record_first_reasoning(tag_to_record, sent_at)
                tag_to_record = None

        if chat.include_usage:
            self._send_event(envelope.usage_chunk(reply.usage(chat.prompt_tokens)))
        self._write_chunk(b"data: [DONE]\n\n")
        self._end_chunks()

    def _pause_for_capacity(self, capacity_request):
        interval = self._wait_out_stall(capacity_request)
        scaled = interval * self.simulator.config.capacity_time_scale

        # Each token is due one interval after the last one was, so that the
        # time spent writing does not slow a fast, time-scaled reply; after a
        # stall the count starts again from now.
        now = time.monotonic()
        due = max(capacity_request.last_token_due, now - scaled) + scaled
        capacity_request.last_token_due = due
        self._pause(max(0.0, due - now))

    def _wait_out_stall(self, capacity_request):
        """Send only keep-alives while the capacity model stalls the request."""
        keepalive = self.simulator.config.keepalive
        last_sent = time.monotonic()
        while (interval := capacity_request.token_interval()) is None:
            if time.monotonic() - last_sent >= keepalive:
                self._write_chunk(b": keep-alive\n\n")
                last_sent = time.monotonic()
            self._pause(CAPACITY_STALL_POLL_SECONDS, keepalive=False)
        return interval

    def _send_reply(self, chat):
        reply = build_reply(chat)
        settings = chat.settings

        generation_seconds = settings.first + settings.delay * len(reply.pieces)
        self._pause(generation_seconds, keepalive=False)

        envelope = Envelope.for_model(chat.model)
        usage = reply.usage(chat.prompt_tokens)
        self._send_json(200, envelope.completion(reply, usage))

    def _replay(self, script):
        config = self.simulator.config
        self._start_event_stream()
        self._pause(config.first_token_delay)

        for index, event in enumerate(script.events):
            if index:
                self._pause(config.token_delay)
            if script.framing == "raw":
                self._write_chunk(f"{event}\n".encode())
            else:
                self._write_chunk(f"data: {event}\n\n".encode())

        self._end_chunks()

    def _pause(self, seconds, keepalive=True):
        """Wait, sending keep-alive comments; raise as soon as the client leaves."""
        interval = self.simulator.config.keepalive if keepalive else math.inf
        now = time.monotonic()
        deadline = now + seconds
        next_keepalive = now + interval

        while True:
            if self.simulator.stopping.is_set():
                raise ServerStopping
            if now >= next_keepalive:
                self._write_chunk(b": keep-alive\n\n")
                next_keepalive = now + interval

            wake_at = min(deadline, next_keepalive, now + STOP_POLL_SECONDS)
            if self._client_left(max(0.0, wake_at - now)):
                raise ClientGone

            now = time.monotonic()
            if now >= deadline:
                return

    def _client_left(self, timeout):
        """Wait up to timeout seconds; tell whether the client closed its end."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.connection, selectors.EVENT_READ)
            if not selector.select(timeout):
                return False

        try:
            peeked = self.connection.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

        if peeked:
            # A pipelined request is waiting: sleep instead of spinning on it.
            time.sleep(timeout)
            return False
        return True

    def _check_api_key(self):
        expected = self.simulator.config.api_key
        if not expected:
            return

        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        valid = scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), expected.encode()
        )
        if not valid:
            # The request body stays unread, so the connection cannot be reused.
            self.close_connection = True
            raise RequestError(
                401, "Incorrect API key provided.", code="invalid_api_key"
            )

    def _read_body(self):
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise RequestError(411, "Send the body with a Content-Length header")

        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(400, "Content-Length is missing, invalid or too large")

        try:
            raw = self.rfile.read(length)
        except OSError as error:
            raise ClientGone from error
        if len(raw) < length:
            raise ClientGone
        return raw

    def _read_json_body(self):
        raw = self._read_body()
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise RequestError(400, "The request body is not valid JSON") from None

    def _start_event_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Transfer-Encoding", "chunked")
        self._write_headers()

    def _send_event(self, payload):
        data = json.dumps(payload, ensure_ascii=False)
        self._write_chunk(f"data: {data}\n\n".encode())

    def _write_chunk(self, data):
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_chunks(self):
        self._write(b"0\r\n\r\n")

    def _send_json(self, status, payload, headers=None):
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            # Tells a pooling client not to send its next request this way.
            self.send_header("Connection", "close")
        self._write_headers()
        self._write(data)

    def _send_error(self, error):
        self._send_json(error.status, error.payload(), error.headers)

    def _write_headers(self):
        try:
            self.end_headers()
        except OSError as error:
            raise ClientGone from error

    def _write(self, data):
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as error:
            raise ClientGone from error


class _SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5, which resets connections
    # when dozens of clients connect at once; real servers take hundreds.
    request_queue_size = 256

    def __init__(self, address, simulator):
        self.simulator = simulator
        self._connections = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, SimulatorHandler)

    def server_bind(self):
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for
        # seconds on a machine without working reverse DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self):
        with self._connections_lock:
            connections = list(self._connections)

        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            logger.debug("Connection from %s dropped: %s", client_address, error)
            return
        logger.exception("Simulator failed while serving %s", client_address)


class SimulatorServer:
    """The simulator, bound to host:port as soon as it is created.

    start() serves from a daemon thread; serve_forever() from the calling one.
    Port 0 picks a free port; url then tells which.
    """

    def __init__(self, host="127.0.0.1", port=8001, config=None):
        self.config = config or SimulatorConfig()
        self.stats_recorder = SimulatorStats()
        self.capacity = capacity.CapacityTracker()
        self.stopping = threading.Event()
        self._scripts = deque()
        self._scripts_lock = threading.Lock()
        self._failures = {}
        self._failures_lock = threading.Lock()
        self._thread = None
        self._httpd = _SimulatorHTTPServer((host, port), self)

    @property
    def host(self):
        host = self._httpd.server_address[0]
        return "127.0.0.1" if host in ("", "0.0.0.0") else host

    @property
    def port(self):
        return self._httpd.server_address[1]

    @property
    def url(self):
        """The base URL for an OpenAI client, ending in /v1."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def stats(self):
        return self.stats_recorder.snapshot()

    def reset_stats(self):
        self.stats_recorder.reset()

    def fail_first_requests(self, chat, body):
        """Raise the HTTP fault of a `fails=N` request, for its first N times.

        Requests count as the same when their messages are; after the Nth
        failure the request is answered as if it had asked for no fault.
        """
        settings = chat.settings
        if settings.fault not in faults.HTTP_FAULTS:
            return chat

        key = (settings.fault, json.dumps(body.get("messages"), sort_keys=True))
        with self._failures_lock:
            failed = self._failures.get(key, 0)
            if failed < settings.fails:
                self._failures[key] = failed + 1
                if len(self._failures) > RECENT_LIMIT:
                    # Requests that never came back; forget the oldest.
                    del self._failures[next(iter(self._failures))]
                raise faults.http_error(
                    settings.fault,
                    chat.prompt_tokens,
                    RequestError,
                    settings.retry_after,
                )
            del self._failures[key]
        return replace(chat, settings=replace(settings, fault=None))

    def queue_events(self, events, framing="data"):
        """Answer a coming chat request with these events, sent verbatim.

        framing "data" sends each event as "data: <event>"; "raw" sends each
        as a raw line of the body. Queued replies are used in order, one per
        request, before any validation of the request.
        """
        if framing not in ("data", "raw"):
            raise ValueError("framing must be 'data' or 'raw'")
        self._queue(ScriptedStream(list(events), framing))

    def queue_error(self, status, message, error_type="invalid_request_error"):
        """Answer a coming chat request with an HTTP error and OpenAI-style body."""
        self._queue(RequestError(status, message, error_type))

    def take_script(self):
        with self._scripts_lock:
            return self._scripts.popleft() if self._scripts else None

    def _queue(self, script):
        with self._scripts_lock:
            self._scripts.append(script)

    def start(self):
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name=f"model-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self):
        self._httpd.serve_forever(poll_interval=SHUTDOWN_POLL_SECONDS)

    def stop(self):
        """Stop serving, abort replies in progress and close open connections."""
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None

        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
