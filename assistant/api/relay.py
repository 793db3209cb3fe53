"""Relaying one API request to the backend: a fair wait, the stream, the meter.

Runs inside Daphne's event loop with no Celery hop. The admission wait
takes the same queue as chat (assistant.admission) step by step, sleeping
on the loop between polls; a client that leaves cancels the wait, and its
ticket leaves the queue. The upstream request goes through the openai
SDK's async client and is read as raw SSE lines by the same parser as chat
(assistant.streaming), so every server form of reasoning comes out in the
field the client asked for.

API requests queue at batch priority: a team's batch job runs when no
browser user is waiting on the same model, and takes turns with the other
teams' jobs. The party in the round robin is the billed team, else the key,
so a team does not get more turns by making more keys.

Shortcomings: tool calls and logprobs in the upstream chunks are not relayed
(the reply is rebuilt from the parsed text); a streamed reply whose
reasoning the parser recognises only at a bare closing tag (a template that
pre-fills the opener, with a profile that does not say so) has already gone
out as answer text, and stays there; a server that is busy (429,
503) is not asked again, its answer goes to the client; a streamed request
whose client leaves before the first byte of the answer is read never
starts its generator, so its row among the user's requests at once
(OpenRequest) stays until it is older than any request could be.
"""

import asyncio
import json
import logging
import threading
import time
import uuid

import openai
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from assistant import failures, metering
from assistant.admission import (
    BATCH,
    POLL_SECONDS,
    Lease,
    TimedOut,
    get_admission,
)
from assistant.api import errors
from assistant.completion import pool_name
from assistant.streaming import (
    THINK_CLOSE,
    THINK_OPEN,
    EventKind,
    ReplyParser,
    ReplyStatus,
    SSEComment,
    SSEDecoder,
    feed_sse_item,
)
from chat.prompt import count_text_tokens

logger = logging.getLogger(__name__)

PER_MESSAGE_OVERHEAD = 4
# Seconds between keep-alive comments while a streamed request waits in the
# queue, so that clients and proxies do not give up on a quiet connection.
QUEUE_KEEPALIVE_SECONDS = 5.0
# Where the reasoning goes in the answer: a field of the delta or message,
# inline between think tags, or nowhere.
REASONING_FIELDS = ("reasoning_content", "reasoning", "think_tags", "none")
DEFAULT_REASONING_FIELD = "reasoning_content"
FINISH_REASONS = {
    ReplyStatus.STOP: "stop",
    ReplyStatus.NO_ANSWER: "stop",
    ReplyStatus.LENGTH_IN_REASONING: "length",
    ReplyStatus.LENGTH_IN_ANSWER: "length",
    ReplyStatus.REASON_UNKNOWN: "stop",
}

# Request fields the relay sets itself rather than passing on.
SET_BY_THE_APP = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "reasoning_field",
    "max_tokens",
    "max_completion_tokens",
}

_clients = {}


def get_async_client(connection):
    """The SDK's async client for one backend, one per event loop."""
    loop = asyncio.get_running_loop()
    key = (id(loop), connection.base_url, connection.api_key)
    client = _clients.get(key)
    if client is None:
        client = openai.AsyncOpenAI(
            base_url=connection.base_url,
            api_key=connection.api_key or "no-key",
            timeout=openai.Timeout(
                settings.MODEL_API_READ_TIMEOUT,
                connect=settings.MODEL_API_CONNECT_TIMEOUT,
            ),
            max_retries=0,
        )
        _clients[key] = client
    return client


def estimate_prompt(messages):
    """A high-side token count of the messages' text (see chat.prompt)."""
    total = 0
    for message in messages:
        total += PER_MESSAGE_OVERHEAD + count_text_tokens(_text_of(message))
    return total


def _text_of(message):
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text", "") for part in content if isinstance(part, dict)]
        return "\n".join(part for part in parts if isinstance(part, str))
    return ""


class Relay:
    """One admitted-or-refused request: waits, streams, and meters itself.

    Build it after the checks that need no slot (key, model, size, quotas);
    then `events()` for a streamed answer or `complete()` for one JSON body.
    Every way out leaves one usage record.
    """

    def __init__(
        self,
        key,
        profile,
        connection,
        body,
        prompt_estimate,
        max_tokens,
        in_flight=None,
    ):
        self.key = key
        self.profile = profile
        # The model's backend (assistant.backends), looked up before the
        # loop runs this: the database is not asked from the loop.
        self.connection = connection
        self.body = body
        self.prompt_estimate = prompt_estimate
        self.max_tokens = max_tokens
        self.reasoning_field = body.get("reasoning_field", DEFAULT_REASONING_FIELD)
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.parser = ReplyParser(
            starts_in_reasoning=profile.starts_in_reasoning,
            reasoning_model=profile.is_reasoning,
        )
        self.gone = threading.Event()
        self.queued_at = time.monotonic()
        self.sent_at = None
        self.first_token_at = None
        self.error_code = ""
        self.end_state = None
        self._lease = None
        self._finished = False
        # The request's row among the user's requests at once (OpenRequest),
        # made by the endpoint; deleted when the request ends.
        self.in_flight = in_flight

    # Admission

    async def admit(self):
        """Wait for a slot in the model's queue without holding up the loop.

        The waiting is asyncio.sleep between polls, so a thousand queued
        requests hold no thread. Each poll is one short call to the
        controller (a Lua script in Redis, or a dict in memory), made on the
        loop itself: no thread to hand off to means no admission lost
        between a thread and a cancelled caller.
        """
        controller = get_admission()
        capacity = self.profile.concurrency_limit
        deadline = time.monotonic() + settings.QUEUE_TIMEOUT
        ticket = controller.enqueue(
            pool_name(self.profile.name, self.connection),
            self.party,
            BATCH,
            self.profile.admission_cost(self.prompt_estimate),
        )
        try:
            while True:
                outcome = controller.admit_or_place(ticket, capacity)
                if isinstance(outcome, Lease):
                    break
                if time.monotonic() >= deadline:
                    raise TimedOut(ticket.id)
                await asyncio.sleep(POLL_SECONDS)
        except BaseException:
            self.gone.set()
            controller.cancel(ticket)
            raise

        self._lease = outcome.start_renewing()
        self.sent_at = time.monotonic()

    @property
    def party(self):
        if self.key.group_id:
            return f"api-team:{self.key.group_id}"
        return f"api-key:{self.key.pk}"

    # Upstream

    def upstream_request(self):
        extra = {
            name: value
            for name, value in self.body.items()
            if name not in SET_BY_THE_APP
        }
        return {
            "model": self.profile.name,
            "messages": self.body["messages"],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self.max_tokens,
            "extra_body": extra,
        }

    async def _parsed_events(self):
        """The parser's events as the upstream stream arrives, timed."""
        create = get_async_client(
            self.connection
        ).chat.completions.with_streaming_response.create
        async with create(**self.upstream_request()) as response:
            decoder = SSEDecoder()
            lines = response.iter_lines().__aiter__()
            while not self.parser.ended:
                try:
                    line = await asyncio.wait_for(anext(lines), self._read_timeout())
                except StopAsyncIteration:
                    break
                item = decoder.decode_line(line)
                if item is None or isinstance(item, SSEComment):
                    continue
                for event in feed_sse_item(item, self.parser):
                    yield event
            for event in self.parser.close():
                yield event

    def _read_timeout(self):
        if self.first_token_at is None:
            return settings.MODEL_API_FIRST_TOKEN_TIMEOUT
        return settings.MODEL_API_IDLE_TIMEOUT

    async def _events_or_failure(self):
        """Parsed events; a refusal or a broken stream becomes an ApiError."""
        try:
            async with asyncio.timeout(settings.MODEL_API_TOTAL_TIMEOUT):
                async for event in self._parsed_events():
                    if event.kind in (EventKind.REASONING, EventKind.ANSWER):
                        if self.first_token_at is None:
                            self.first_token_at = time.monotonic()
                    yield event
        except openai.APIStatusError as exc:
            code, detail = failures.classify(exc)
            self.error_code = code
            raise errors.upstream(exc.status_code, code, detail) from exc
        except (TimeoutError, openai.APITimeoutError) as exc:
            self.error_code = "timeout"
            raise errors.upstream(504, "timeout", "timeout") from exc
        except (openai.APIConnectionError, *failures.TRANSPORT_ERRORS) as exc:
            self.error_code = "unreachable"
            raise errors.upstream(502, "unreachable", str(exc)) from exc

    # The two ways to answer

    async def events(self):
        """The streamed answer: SSE text, from queue to [DONE]."""
        try:
            async for keepalive in self._admit_with_keepalives():
                yield keepalive
            async for event in self._events_or_failure():
                for chunk in self._chunks_for(event):
                    yield _sse(chunk)
            # Metered before the client hears the end, so that the usage
            # page already counts a request its client saw finish.
            await self.finish()
            yield _sse(self.usage_chunk())
            yield "data: [DONE]\n\n"
        except errors.ApiError as exc:
            await self.finish()
            yield exc.sse()
        except Exception:
            logger.exception("api stream %s failed", self.id)
            self.error_code = "internal"
            await self.finish()
            yield errors.internal().sse()
        except (asyncio.CancelledError, GeneratorExit):
            self.gone.set()
            self.end_state = ReplyStatus.STOPPED
            raise
        finally:
            await self.finish()

    async def _admit_with_keepalives(self):
        waiting = asyncio.ensure_future(self.admit())
        try:
            while True:
                done, _pending = await asyncio.wait(
                    {waiting}, timeout=QUEUE_KEEPALIVE_SECONDS
                )
                if done:
                    self._raise_if_not_admitted(waiting)
                    return
                yield ": waiting for a free slot of the model\n\n"
        finally:
            if not waiting.done():
                self.gone.set()
                waiting.cancel()

    def _raise_if_not_admitted(self, waiting):
        try:
            waiting.result()
        except TimedOut:
            self.error_code = "queue_timeout"
            raise errors.queue_timeout() from None

    async def complete(self):
        """The whole answer as one chat.completion object."""
        try:
            await self.admit()
            async for _event in self._events_or_failure():
                pass
            return self.completion_object()
        except TimedOut:
            self.error_code = "queue_timeout"
            raise errors.queue_timeout() from None
        except asyncio.CancelledError:
            self.gone.set()
            self.end_state = ReplyStatus.STOPPED
            raise
        finally:
            await self.finish()

    # Shapes

    def _chunks_for(self, event):
        if event.kind is EventKind.REASONING:
            yield self._chunk(self._reasoning_delta(event.text))
        elif event.kind is EventKind.ANSWER:
            yield self._chunk(self._answer_delta(event.text))
        elif event.kind is EventKind.ERROR:
            self.error_code = "in_band"
            raise errors.upstream(502, "in_band", event.error.message)
        elif event.kind is EventKind.END:
            if event.status is ReplyStatus.INCOMPLETE:
                self.error_code = "incomplete"
                raise errors.upstream(502, "incomplete", "the stream broke off")
            if self.reasoning_field == "think_tags" and not self.parser.saw_answer:
                if self.parser.saw_reasoning:
                    yield self._chunk({"content": THINK_CLOSE})
            yield self._chunk({}, FINISH_REASONS.get(event.status, "stop"))

    def _reasoning_delta(self, text):
        if self.reasoning_field == "none":
            return {}
        if self.reasoning_field == "think_tags":
            opener = THINK_OPEN if self.parser.reasoning == text else ""
            return {"content": opener + text}
        return {self.reasoning_field: text}

    def _answer_delta(self, text):
        if self.reasoning_field == "think_tags" and self.parser.saw_reasoning:
            if self.parser.answer == text:
                return {"content": THINK_CLOSE + text}
        return {"content": text}

    def _chunk(self, delta, finish_reason=None):
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.profile.name,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", **delta},
                    "finish_reason": finish_reason,
                }
            ],
        }

    def usage_chunk(self):
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.profile.name,
            "choices": [],
            "usage": self.usage(),
        }

    def completion_object(self):
        parser = self.parser
        if parser.error is not None:
            self.error_code = "in_band"
            raise errors.upstream(502, "in_band", parser.error.message)
        if parser.status is ReplyStatus.INCOMPLETE:
            self.error_code = "incomplete"
            raise errors.upstream(502, "incomplete", "the stream broke off")

        message = {"role": "assistant", "content": parser.answer}
        if self.reasoning_field == "think_tags" and parser.reasoning:
            message["content"] = f"{THINK_OPEN}{parser.reasoning}{THINK_CLOSE}"
            message["content"] += parser.answer
        elif self.reasoning_field in ("reasoning_content", "reasoning"):
            message[self.reasoning_field] = parser.reasoning or None
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.profile.name,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": FINISH_REASONS.get(parser.status, "stop"),
                }
            ],
            "usage": self.usage(),
        }

    def usage(self):
        """The server's counts; the app's estimates where it gave none."""
        reported = self.parser.usage
        prompt = reported.prompt_tokens if reported else None
        completion = reported.completion_tokens if reported else None
        reasoning = reported.reasoning_tokens if reported else None
        estimated = prompt is None or completion is None
        if prompt is None:
            prompt = self.prompt_estimate
        if completion is None:
            completion = self._output_estimate()

        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if reasoning is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        if estimated:
            usage["estimated"] = True
        return usage

    def _output_estimate(self):
        return count_text_tokens(self.parser.reasoning + self.parser.answer)

    # The meter

    async def finish(self):
        """Give the slot back and leave the usage record; once only."""
        if self._finished:
            return
        self._finished = True
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        await sync_to_async(self._record)()

    def _reported(self):
        """(prompt, completion, reasoning) tokens as the server counted them."""
        usage = self.parser.usage
        if usage is None:
            return None, None, None
        return usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens

    def _record(self):
        if self.in_flight is not None:
            self.in_flight.delete()
        now = time.monotonic()
        prompt, completion, reasoning = self._reported()
        end_state = self.end_state or self._end_state()
        metering.record_request(
            user=self.key.user_id,
            kind="api",
            model=self.profile.name,
            end_state=end_state,
            error_code=self.error_code,
            prompt_tokens=prompt,
            completion_tokens=completion,
            reasoning_tokens=reasoning,
            # A request the backend never saw costs nothing.
            estimated_prompt_tokens=self.prompt_estimate if self.sent_at else None,
            estimated_output_tokens=self._output_estimate() if self.sent_at else None,
            queue_ms=_ms(self.queued_at, self.sent_at or now),
            first_token_ms=_ms(self.sent_at, self.first_token_at),
            duration_ms=_ms(self.sent_at, now if self.sent_at else None),
            api_key=self.key.pk,
            group=self.key.group_id,
        )
        type(self.key).objects.filter(pk=self.key.pk).update(
            last_used_at=timezone.now()
        )

    def _end_state(self):
        if self.error_code:
            return ReplyStatus.ERROR
        if self.gone.is_set():
            return ReplyStatus.STOPPED
        return self.parser.status or ReplyStatus.INCOMPLETE


def _ms(start, end):
    if start is None or end is None:
        return None
    return round((end - start) * 1000)


def _sse(payload):
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class EmbeddingRelay(Relay):
    """An embeddings request: the same wait and meter, one JSON answer."""

    def __init__(self, key, profile, connection, body, prompt_estimate, in_flight=None):
        super().__init__(
            key,
            profile,
            connection,
            body,
            prompt_estimate,
            max_tokens=None,
            in_flight=in_flight,
        )
        self.response = None

    async def complete(self):
        try:
            await self.admit()
            self.response = await self._embed()
            self.end_state = ReplyStatus.STOP
            return self._answer()
        except TimedOut:
            self.error_code = "queue_timeout"
            raise errors.queue_timeout() from None
        except asyncio.CancelledError:
            self.gone.set()
            self.end_state = ReplyStatus.STOPPED
            raise
        finally:
            await self.finish()

    async def _embed(self):
        extra = {
            name: value
            for name, value in self.body.items()
            if name not in {"model", "input"}
        }
        try:
            return await get_async_client(self.connection).embeddings.create(
                model=self.profile.name, input=self.body["input"], extra_body=extra
            )
        except openai.APIStatusError as exc:
            code, detail = failures.classify(exc)
            self.error_code = code
            raise errors.upstream(exc.status_code, code, detail) from exc
        except (openai.APIConnectionError, *failures.TRANSPORT_ERRORS) as exc:
            self.error_code = "unreachable"
            raise errors.upstream(502, "unreachable", str(exc)) from exc

    def _answer(self):
        answer = self.response.model_dump(exclude_none=True)
        answer["model"] = self.profile.name
        prompt = self._reported()[0]
        estimated = prompt is None
        if estimated:
            prompt = self.prompt_estimate
        answer["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
        if estimated:
            answer["usage"]["estimated"] = True
        return answer

    def _reported(self):
        usage = getattr(self.response, "usage", None)
        prompt = getattr(usage, "prompt_tokens", None)
        return prompt, (0 if prompt is not None else None), None

    def _output_estimate(self):
        return 0

    def _end_state(self):
        if self.error_code:
            return ReplyStatus.ERROR
        return ReplyStatus.STOPPED
