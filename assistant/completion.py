"""One request to the model, start to end, for work nobody watches token by token.

Chat replies stream to the browser as they arrive (chat.generation). Other
work (a polished chunk, a conversation's title) wants only the finished
text, but must take the same road to the backend: a fair place in the
model's admission queue, the same back-off when the server is busy, the
same time limits and Stop, the same parsing of reasoning. `complete()` is
that road, quotas and metering included; StreamGuard, which both use,
watches one open stream.
"""

import logging
import threading
import time
from dataclasses import dataclass

import openai
from django.conf import settings
from django.core.cache import cache

from assistant import backoff, failures, metering, quotas
from assistant.admission import INTERACTIVE, Cancelled, TimedOut, wait_for_slot
from assistant.backends import connection_for_model
from assistant.modelapi import open_chat_stream
from assistant.streaming import (
    ReplyParser,
    ReplyStatus,
    SSEComment,
    feed_sse_item,
    iter_sse,
)

logger = logging.getLogger(__name__)

# How often batch work over the user's quota of requests at once looks again.
OWN_TURN_POLL_SECONDS = 1.0


def pool_name(model, connection=None):
    """The admission pool of a model: one per backend and model.

    Give the model's Connection where the database may not be asked (on an
    event loop); without it, the model's backend is looked up.
    """
    connection = connection or connection_for_model(model)
    return f"{connection.pool_prefix}|{model}"


class StreamGuard:
    """Ends a stream that the user stopped or that the backend let go quiet.

    A thread beside the reader checks, several times a second, for the
    stop key in the cache (the Stop may come from any web process) and for
    the time limits: until the first data, between two pieces of data, and
    in all. Keep-alive comments do not count as data: a backend that sends
    only those has nothing to say. Tripping either cuts the upstream
    connection, which ends the reader's blocking read at once.
    """

    def __init__(self, stop_key, stream):
        self.stop_key = stop_key
        self.stream = stream
        self.reason = None
        self.started = time.monotonic()
        self.last_data_at = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        self._thread.join(timeout=5)

    def saw_data(self):
        self.last_data_at = time.monotonic()

    def _watch(self):
        while not self._done.wait(settings.STREAM_STOP_POLL_INTERVAL):
            reason = self._reason_to_cut()
            if reason:
                self.reason = reason
                logger.info("cutting stream %s: %s", self.stop_key, reason)
                self.stream.cut()
                return

    def _reason_to_cut(self):
        now = time.monotonic()
        if cache.get(self.stop_key):
            return "stopped"
        if now - self.started > settings.MODEL_API_TOTAL_TIMEOUT:
            return "timeout_total"
        if self.last_data_at is None:
            if now - self.started > settings.MODEL_API_FIRST_TOKEN_TIMEOUT:
                return "timeout_first_token"
        elif now - self.last_data_at > settings.MODEL_API_IDLE_TIMEOUT:
            return "timeout_idle"
        return None


class CompletionFailure(Exception):
    """A request that ended without a usable answer.

    `code` is one of assistant.failures' codes, or a ReplyStatus value for
    a reply that ended without an answer (length, no_answer, ...).
    """

    def __init__(self, code, detail=""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass
class Completion:
    answer: str
    reasoning: str
    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_tokens: int | None
    queue_seconds: float


def complete(
    profile,
    messages,
    max_tokens,
    *,
    user_id,
    kind,
    priority,
    stop_key,
    prompt_estimate=0,
    on_wait=None,
    thinking=True,
):
    """The model's finished answer to `messages`, after a fair wait.

    `user_id` is whose quotas it counts against and whose turn it takes in
    the queue; `kind` names the feature in the usage records. Raises
    Cancelled when `stop_key` is set before or during the request,
    CompletionFailure for an answer that did not come (over quota, timeouts,
    a cut, an error in the stream, the output limit), and the openai SDK's
    errors for a server that refused (failures.classify explains those).
    Every way out leaves one usage record. `thinking` False switches a
    reasoning model's thinking off where its profile can (as a chat's
    setting does); elsewhere it is ignored and the model thinks as it will.
    """
    thinking = thinking or not profile.can_switch_thinking
    request = _MeteredRequest(profile, user_id, kind, prompt_estimate)
    with request, quotas.open_request(user_id, kind) as in_flight:
        limits = _check_token_quota(user_id, prompt_estimate)
        _wait_for_own_turn(limits, in_flight, priority, stop_key)
        lease = _wait_for_slot(profile, user_id, priority, stop_key, request, on_wait)
        with lease:
            request.sent()
            parser = _stream(profile, messages, max_tokens, stop_key, thinking)
        request.completion = _answer(parser, request.queue_seconds)
    return request.completion


def _check_token_quota(user_id, prompt_estimate):
    """Refuse a request the user's token quotas leave no room for; their Limits."""
    # Requests at once are counted by _wait_for_own_turn instead.
    refusal = quotas.check_quota(user_id, prompt_estimate, count_open=lambda: 0)
    if refusal is not None:
        _refuse(refusal.code, refusal.params)
    return quotas.limits_for(user_id)


def _refuse(code, params):
    figures = ", ".join(f"{name} {value}" for name, value in params.items())
    raise CompletionFailure(code, figures)


def _wait_for_own_turn(limits, in_flight, priority, stop_key):
    """Keep the user within their quota of requests at once.

    The user's open chat replies and their requests that started before this
    one go first. Interactive work over the limit is refused, as a chat reply
    is, with the figures; batch work (a paper's chunks) waits its turn
    instead, so that a job larger than the quota still finishes.
    """
    limit = limits.concurrent_requests if limits else None
    if limit is None:
        return

    give_up_at = time.monotonic() + settings.QUEUE_TIMEOUT
    while True:
        ahead = quotas.requests_ahead(in_flight)
        if ahead < limit:
            return
        if priority == INTERACTIVE:
            _refuse("quota_concurrent", {"limit": limit, "open": ahead})
        if time.monotonic() >= give_up_at:
            raise CompletionFailure("queue_timeout")
        _sleep(OWN_TURN_POLL_SECONDS, stop_key)


def _wait_for_slot(profile, user_id, priority, stop_key, request, on_wait):
    queued_at = time.monotonic()
    try:
        lease = wait_for_slot(
            pool=pool_name(profile.name),
            user_key=str(user_id),
            priority=priority,
            capacity=profile.concurrency_limit,
            cost=profile.admission_cost(request.prompt_estimate),
            on_wait=on_wait,
            cancelled=lambda: bool(cache.get(stop_key)),
            timeout=settings.QUEUE_TIMEOUT,
        )
    except TimedOut:
        raise CompletionFailure("queue_timeout") from None
    request.queue_seconds = time.monotonic() - queued_at
    return lease


class _MeteredRequest:
    """Leaves one usage record however the request inside it ends."""

    def __init__(self, profile, user_id, kind, prompt_estimate):
        self.profile = profile
        self.user_id = user_id
        self.kind = kind
        self.prompt_estimate = prompt_estimate
        self.queue_seconds = None
        self.completion = None
        self._sent_at = None

    def sent(self):
        self._sent_at = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        end_state, error_code = _end_of(exc)
        completion = self.completion
        duration = None
        if self._sent_at is not None:
            duration = time.monotonic() - self._sent_at
        metering.record_request(
            user=self.user_id,
            kind=self.kind,
            model=self.profile.name,
            end_state=end_state,
            error_code=error_code,
            prompt_tokens=completion.prompt_tokens if completion else None,
            completion_tokens=completion.completion_tokens if completion else None,
            reasoning_tokens=completion.reasoning_tokens if completion else None,
            # A request the backend never saw costs nothing.
            estimated_prompt_tokens=self.prompt_estimate if self._sent_at else None,
            queue_ms=_ms(self.queue_seconds),
            duration_ms=_ms(duration),
        )
        return False


def _end_of(exc):
    """The usage record's end state and error code for how a request ended."""
    if exc is None:
        return ReplyStatus.STOP, ""
    if isinstance(exc, Cancelled):
        return ReplyStatus.STOPPED, ""
    if isinstance(exc, CompletionFailure):
        if exc.code in {status.value for status in ReplyStatus}:
            return exc.code, ""
        return ReplyStatus.ERROR, exc.code
    if isinstance(exc, openai.OpenAIError):
        return ReplyStatus.ERROR, failures.classify(exc)[0]
    return ReplyStatus.ERROR, "internal"


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000)


def _stream(profile, messages, max_tokens, stop_key, thinking):
    """The parsed reply, asking again while the server says it is busy."""
    refusals = 0
    params = profile.thinking_params(thinking)
    while True:
        try:
            with open_chat_stream(
                profile.name, messages, max_tokens, **params
            ) as stream:
                with StreamGuard(stop_key, stream) as guard:
                    return _read(profile, stream, guard, thinking)
        except openai.APIStatusError as exc:
            if not backoff.is_busy(exc):
                raise
            refusals += 1
            wait = backoff.next_wait(exc, refusals)
            if wait is None:
                raise
            logger.warning(
                "model server busy (%s) for %s, asking again in %.1f s",
                exc.status_code,
                profile.name,
                wait,
            )
            _sleep(wait, stop_key)


def _sleep(seconds, stop_key):
    wake_at = time.monotonic() + seconds
    while (remaining := wake_at - time.monotonic()) > 0:
        if cache.get(stop_key):
            raise Cancelled(stop_key)
        time.sleep(min(remaining, settings.STREAM_STOP_POLL_INTERVAL))


def _read(profile, stream, guard, thinking):
    # With thinking off the template writes no opening think tag (Qwen3
    # writes an empty block), so the stream starts in the answer.
    parser = ReplyParser(
        starts_in_reasoning=profile.starts_in_reasoning and thinking,
        reasoning_model=profile.is_reasoning and thinking,
    )
    try:
        for item in iter_sse(stream.lines()):
            if stream.cut_requested.is_set():
                break
            if isinstance(item, SSEComment):
                continue
            guard.saw_data()
            feed_sse_item(item, parser)
            if parser.ended:
                break
    except (*failures.TRANSPORT_ERRORS, OSError) as exc:
        if not stream.cut_requested.is_set():
            if guard.last_data_at is None:
                raise
            raise CompletionFailure("incomplete", repr(exc)) from exc

    if guard.reason == "stopped":
        raise Cancelled(guard.stop_key)
    if guard.reason:
        raise CompletionFailure(guard.reason)
    parser.close()
    return parser


def _answer(parser, queue_seconds):
    if parser.error is not None:
        raise CompletionFailure("in_band", parser.error.message)
    if parser.status != ReplyStatus.STOP:
        raise CompletionFailure(str(parser.status or ReplyStatus.REASON_UNKNOWN))
    if not parser.answer.strip():
        raise CompletionFailure(ReplyStatus.NO_ANSWER)

    usage = parser.usage
    return Completion(
        answer=parser.answer,
        reasoning=parser.reasoning,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        reasoning_tokens=usage.reasoning_tokens if usage else None,
        queue_seconds=queue_seconds,
    )
