"""Reading streamed chat completions from OpenAI-compatible servers.

Two layers. SSEDecoder / iter_sse() turn the lines of an HTTP body into
Server-Sent Events. ReplyParser turns the JSON chunks of one streamed chat
completion into StreamEvents: reasoning and answer deltas, usage, in-band
errors and the end state. feed_sse_item() and iter_reply_events() join the
two.

Both layers are push-based (one line, one chunk at a time), so an async
caller drives them the same way as a sync one.

DeepSeek-R1 servers disagree on where the reasoning goes: a field of its own
(`reasoning_content` or `reasoning`), inline between <think> tags, or inline
with the opener already written by the chat template. The parser accepts all
of them and gives the same texts however the server cuts them into chunks.
"""

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import Enum, StrEnum

logger = logging.getLogger(__name__)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
DONE_SENTINEL = "[DONE]"

GENERIC_ERROR_MESSAGE = "The model server ended the reply with an error."
CONTENT_FILTER_MESSAGE = "The model server's content filter stopped the reply."


# Server-Sent Events


@dataclass(frozen=True)
class SSEComment:
    """A line starting with ":"; servers send these as keep-alives."""

    text: str


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event; `id` is the last event ID seen so far."""

    data: str
    event: str = "message"
    id: str = ""


class SSEDecoder:
    """Incremental Server-Sent Events decoder following the WHATWG rules.

    Push the body's lines (with or without their terminator) one at a time to
    decode_line(), then call finish() when the body ends.
    """

    def __init__(self):
        self._data_lines = []
        self._event_type = ""
        self._last_event_id = ""
        self._at_first_line = True

    def decode_line(self, line: str) -> SSEComment | SSEEvent | None:
        line = _strip_line_end(line)
        if self._at_first_line:
            self._at_first_line = False
            line = line.removeprefix("\ufeff")

        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return SSEComment(line[1:].removeprefix(" "))

        name, _, value = line.partition(":")
        self._read_field(name, value.removeprefix(" "))
        return None

    def finish(self) -> SSEEvent | None:
        # WHATWG drops an event cut off by the end of the body, but some
        # servers close right after their last data line, and that line is
        # often the one with the finish reason or [DONE].
        return self._dispatch()

    def _read_field(self, name, value):
        if name == "data":
            self._data_lines.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id" and "\0" not in value:
            self._last_event_id = value
        # "retry" and unknown fields are ignored: a reply is never resumed.

    def _dispatch(self):
        data_lines = self._data_lines
        event_type = self._event_type or "message"
        self._data_lines = []
        self._event_type = ""

        # An event without data (an id-only one, say) carries no chunk.
        if not data_lines:
            return None
        return SSEEvent("\n".join(data_lines), event_type, self._last_event_id)


def iter_sse(lines: Iterable[str]) -> Iterator[SSEComment | SSEEvent]:
    """Decode the lines of an SSE body, e.g. from httpx's iter_lines()."""
    decoder = SSEDecoder()
    for line in lines:
        item = decoder.decode_line(line)
        if item is not None:
            yield item

    last_event = decoder.finish()
    if last_event is not None:
        yield last_event


def _strip_line_end(line):
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\n", "\r")):
        return line[:-1]
    return line


# Replies


class ReplyStatus(StrEnum):
    """How a reply ended. STOPPED (by the user) is set by the caller."""

    STOP = "stop"
    LENGTH_IN_REASONING = "length_in_reasoning"
    LENGTH_IN_ANSWER = "length_in_answer"
    NO_ANSWER = "no_answer"
    STOPPED = "stopped"
    ERROR = "error"
    INCOMPLETE = "incomplete"
    REASON_UNKNOWN = "reason_unknown"


class EventKind(StrEnum):
    REASONING = "reasoning"
    ANSWER = "answer"
    RECLASSIFY = "reclassify"
    USAGE = "usage"
    ERROR = "error"
    END = "end"


@dataclass(frozen=True)
class Usage:
    """Token counts as the server reported them; None means unknown."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(frozen=True)
class StreamError:
    """An error reported inside the stream, with code and type as sent."""

    message: str
    code: int | str | None = None
    type: str | None = None


@dataclass(frozen=True)
class StreamEvent:
    """One step of a streamed reply; apply them in order.

    REASONING, ANSWER: `text` is a non-empty delta to append to that part.
    RECLASSIFY: `text` is the whole answer so far, which moves to the end of
        the reasoning; the answer starts again from "".
    USAGE: `usage` is set; a later USAGE event replaces an earlier one.
    ERROR: `error` is set; sent at most once.
    END: `status` is set; always the last event, sent exactly once.
    """

    kind: EventKind
    text: str = ""
    usage: Usage | None = None
    error: StreamError | None = None
    status: ReplyStatus | None = None


class _Mode(Enum):
    START = "start"  # no content text yet, or only a possible "<think>"
    THINK = "think"  # content is reasoning until "</think>"
    ANSWER = "answer"


class ReplyParser:
    """Turns the chunks of one streamed chat completion into StreamEvents.

    Call feed() for each decoded chunk, feed_done() for "[DONE]" and close()
    when the connection ends (also after feed_done(); it is then a no-op).
    Each call returns the events it produced. Reasoning and answer deltas go
    out as soon as they arrive, except for a few characters that may be the
    start of a tag; those are held until the next chunk or the end.

    A finish reason or an error ends the text: later text is ignored, later
    usage is still read. A "stop" with an empty answer ends as NO_ANSWER,
    with or without reasoning; "content_filter" ends as ERROR with a
    synthesised error; any other unknown finish reason counts as "stop".
    """

    def __init__(self, starts_in_reasoning: bool = False, reasoning_model: bool = True):
        self._starts_in_reasoning = starts_in_reasoning
        self._mode = _Mode.START
        self._held = ""
        self._used_think_tags = False
        # A bare "</think>" in the answer ends a reasoning only for a model
        # that reasons: from any other model it is text, as in an answer
        # about chat templates.
        self._closer_fired = not reasoning_model
        self._fence = _FenceTracker()

        self._reasoning = _Text()
        self._answer = _Text()
        self._status = None
        self._finish_reason = None
        self._usage = None
        self._error = None

        self._text_ended = False
        self._ended = False
        self._events = []

    @property
    def reasoning(self) -> str:
        return str(self._reasoning)

    @property
    def answer(self) -> str:
        return str(self._answer)

    @property
    def status(self) -> ReplyStatus | None:
        return self._status

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @property
    def finish_reason(self) -> str | None:
        return self._finish_reason

    @property
    def error(self) -> StreamError | None:
        return self._error

    @property
    def saw_reasoning(self) -> bool:
        """Whether non-whitespace reasoning has been emitted."""
        return bool(self._reasoning)

    @property
    def saw_answer(self) -> bool:
        """Whether answer text has been emitted; false again after RECLASSIFY."""
        return bool(self._answer)

    @property
    def ended(self) -> bool:
        """Whether the END event has been emitted."""
        return self._ended

    def feed(self, payload: dict) -> list[StreamEvent]:
        if self._ended:
            return []
        if not isinstance(payload, dict):
            return self.feed_malformed(json.dumps(payload))

        choice = _first_choice(payload)
        if choice is not None and not self._text_ended:
            self._read_choice(choice, payload)
        self._read_usage(payload.get("usage"))
        chunk_error = _chunk_error(payload)
        if chunk_error is not None:
            self._fail(_stream_error(chunk_error))
        return self._take_events()

    def feed_malformed(self, data: str) -> list[StreamEvent]:
        """Record a data payload that is not a JSON object as an error."""
        if self._ended:
            return []

        logger.warning("Model server sent a chunk that is not JSON: %.200r", data)
        message = f"The model server sent data that is not valid JSON: {data[:80]!r}"
        self._fail(StreamError(message, type="invalid_chunk"))
        return self._take_events()

    def feed_done(self) -> list[StreamEvent]:
        return self._end(ReplyStatus.REASON_UNKNOWN)

    def close(self) -> list[StreamEvent]:
        return self._end(ReplyStatus.INCOMPLETE)

    def _end(self, status_if_unknown):
        if self._ended:
            return []

        self._end_text()
        if self._status is None:
            self._status = status_if_unknown

        self._ended = True
        self._events.append(StreamEvent(EventKind.END, status=self._status))
        return self._take_events()

    def _take_events(self):
        events, self._events = self._events, []
        return events

    def _read_choice(self, choice, payload):
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}

        # Some servers mirror the reasoning into both fields; read only one.
        reasoning = _text_field(delta, "reasoning_content") or _text_field(
            delta, "reasoning"
        )
        if reasoning:
            self._read_reasoning_field(reasoning)

        content = _text_field(delta, "content")
        if content:
            self._read_content(content)

        # "" counts as no finish reason (SGLang sends it on every chunk).
        finish_reason = choice.get("finish_reason") or None
        if finish_reason is not None:
            error = _chunk_error(payload) or choice.get("error")
            self._read_finish(str(finish_reason), error)

    def _read_reasoning_field(self, text):
        # A server that sends reasoning in a field of its own runs a reasoning
        # parser, so all its content is answer, whatever the profile says
        # about the chat template.
        if self._mode is _Mode.START:
            self._starts_in_reasoning = False
        self._emit_reasoning(text)

    def _read_content(self, text):
        text = self._held + text
        self._held = ""

        if self._mode is _Mode.START:
            self._read_start(text)
        elif self._mode is _Mode.THINK:
            self._read_think(text)
        else:
            self._read_answer(text)

    def _read_start(self, text):
        # Leading whitespace is dropped from reasoning and answer alike.
        text = text.lstrip()
        if not text:
            return

        if text.startswith(THINK_OPEN):
            self._enter_think()
            self._read_think(text[len(THINK_OPEN) :])
        elif THINK_OPEN.startswith(text):
            self._held = text
        elif self._starts_in_reasoning:
            self._enter_think()
            self._read_think(text)
        else:
            self._mode = _Mode.ANSWER
            self._read_answer(text)

    def _enter_think(self):
        self._mode = _Mode.THINK
        self._used_think_tags = True

    def _read_think(self, text):
        closer_at = text.find(THINK_CLOSE)
        if closer_at == -1:
            ready, self._held = _split_partial_tag(text, THINK_CLOSE)
            self._emit_reasoning(ready)
            return

        self._emit_reasoning(text[:closer_at])
        self._mode = _Mode.ANSWER
        self._read_answer(text[closer_at + len(THINK_CLOSE) :])

    def _read_answer(self, text):
        if not self._closer_armed():
            self._emit_answer(text)
            return

        search_from = 0
        while (closer_at := text.find(THINK_CLOSE, search_from)) != -1:
            self._emit_answer(text[search_from:closer_at])
            if not self._fence.inside:
                self._reclassify()
                self._emit_answer(text[closer_at + len(THINK_CLOSE) :])
                return
            self._emit_answer(THINK_CLOSE)
            search_from = closer_at + len(THINK_CLOSE)

        ready, self._held = _split_partial_tag(text[search_from:], THINK_CLOSE)
        self._emit_answer(ready)

    def _closer_armed(self):
        """Whether a bare "</think>" in the answer would end a reasoning.

        Servers whose template opens <think> without saying so send only the
        closer, after text that went out as answer. Only the first closer
        counts, and only while no reasoning has been seen some other way.
        """
        return not (self._closer_fired or self._used_think_tags or self._reasoning)

    def _reclassify(self):
        self._closer_fired = True
        moved = str(self._answer)
        self._answer.clear()
        if not moved:
            return

        # The reasoning is empty here: the closer is armed only while it is.
        self._reasoning.append(moved)
        self._events.append(StreamEvent(EventKind.RECLASSIFY, text=moved))

    def _emit_reasoning(self, text):
        if not self._reasoning:
            text = text.lstrip()
        if not text:
            return

        self._reasoning.append(text)
        self._push_text(EventKind.REASONING, text)

    def _emit_answer(self, text):
        if not self._answer:
            text = text.lstrip()
        if not text:
            return

        if self._closer_armed():
            self._fence.feed(text)
        self._answer.append(text)
        self._push_text(EventKind.ANSWER, text)

    def _push_text(self, kind, text):
        last = self._events[-1] if self._events else None
        if last is not None and last.kind is kind:
            self._events[-1] = replace(last, text=last.text + text)
        else:
            self._events.append(StreamEvent(kind, text=text))

    def _flush_held(self):
        held, self._held = self._held, ""
        if not held:
            return

        # In START the held text is a partial "<think>" that never finished.
        if self._mode is _Mode.THINK or (
            self._mode is _Mode.START and self._starts_in_reasoning
        ):
            self._emit_reasoning(held)
        else:
            self._emit_answer(held)

    def _end_text(self):
        self._flush_held()
        self._text_ended = True

    def _read_finish(self, finish_reason, error):
        self._end_text()
        self._finish_reason = finish_reason

        if finish_reason == "error":
            self._fail(_stream_error(error))
        elif finish_reason == "content_filter":
            self._fail(StreamError(CONTENT_FILTER_MESSAGE, code="content_filter"))
        elif self._status is None:
            self._status = self._status_for(finish_reason)

    def _status_for(self, finish_reason):
        # The answer is stored without leading whitespace, so any answer text
        # at all is a real answer.
        if finish_reason == "length":
            if self._answer:
                return ReplyStatus.LENGTH_IN_ANSWER
            return ReplyStatus.LENGTH_IN_REASONING

        # "stop" and anything unrecognised. An empty answer is never filled
        # from the reasoning: the user is told there is no final answer.
        if self._answer:
            return ReplyStatus.STOP
        return ReplyStatus.NO_ANSWER

    def _fail(self, error):
        self._end_text()
        self._status = ReplyStatus.ERROR
        if self._error is None:
            self._error = error
            self._events.append(StreamEvent(EventKind.ERROR, error=error))

    def _read_usage(self, raw_usage):
        usage = _parse_usage(raw_usage)
        if usage is None:
            return

        # Servers that do not count reasoning separately report 0 reasoning
        # tokens; with reasoning text in hand, 0 is wrong, so it is unknown.
        if usage.reasoning_tokens == 0 and self._reasoning:
            usage = replace(usage, reasoning_tokens=None)

        self._usage = usage
        self._events.append(StreamEvent(EventKind.USAGE, usage=usage))


def feed_sse_item(
    item: SSEComment | SSEEvent, parser: ReplyParser
) -> list[StreamEvent]:
    """Pass one decoded SSE item to the parser; comments give no events."""
    if isinstance(item, SSEComment):
        return []

    data = item.data.strip()
    if not data:
        return []
    if data == DONE_SENTINEL:
        return parser.feed_done()

    try:
        payload = json.loads(data)
    except ValueError:
        return parser.feed_malformed(item.data)

    # Some relays send errors as their own event type with a bare error object.
    if item.event == "error" and not _chunk_error(payload):
        payload = {"error": payload}
    return parser.feed(payload)


def iter_reply_events(
    sse_items: Iterable[SSEComment | SSEEvent], parser: ReplyParser
) -> Iterator[StreamEvent]:
    """Drive the parser from iter_sse() output; the last event is END.

    Reading stops at "[DONE]", since some servers keep the connection open
    after it. Keep-alive comments are dropped here; a caller that times out
    on them loops over the SSE items itself and calls feed_sse_item().
    """
    for item in sse_items:
        yield from feed_sse_item(item, parser)
        if parser.ended:
            return

    yield from parser.close()


def _first_choice(payload):
    choices = payload.get("choices")
    if not isinstance(choices, list):
        return None

    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


def _text_field(delta, name):
    value = delta.get(name)
    return value if isinstance(value, str) else ""


def _chunk_error(payload):
    if not isinstance(payload, dict):
        return None
    if payload.get("error") is not None:
        return payload["error"]

    # Older vLLM versions send the error response itself as the chunk.
    if payload.get("object") == "error":
        return payload
    return None


def _stream_error(raw_error):
    if isinstance(raw_error, str) and raw_error:
        return StreamError(raw_error)
    if not isinstance(raw_error, dict):
        return StreamError(GENERIC_ERROR_MESSAGE)

    message = raw_error.get("message")
    code = raw_error.get("code")
    error_type = raw_error.get("type")
    return StreamError(
        message=str(message) if message else GENERIC_ERROR_MESSAGE,
        code=code if isinstance(code, int | str) else None,
        type=error_type if isinstance(error_type, str) else None,
    )


def _parse_usage(raw_usage):
    if not isinstance(raw_usage, dict):
        return None

    details = raw_usage.get("completion_tokens_details")
    reasoning_tokens = None
    if isinstance(details, dict):
        reasoning_tokens = _token_count(details.get("reasoning_tokens"))
    if reasoning_tokens is None:
        reasoning_tokens = _token_count(raw_usage.get("reasoning_tokens"))

    usage = Usage(
        prompt_tokens=_token_count(raw_usage.get("prompt_tokens")),
        completion_tokens=_token_count(raw_usage.get("completion_tokens")),
        reasoning_tokens=reasoning_tokens,
    )
    return None if usage == Usage() else usage


def _token_count(value):
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _split_partial_tag(text, tag):
    """Split text into what is ready and an end that may begin `tag`."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:length]):
            return text[:-length], text[-length:]
    return text, ""


class _Text:
    """Append-only text that joins its parts only when read."""

    def __init__(self):
        self._parts = []

    def __bool__(self):
        return bool(self._parts)

    def __str__(self):
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def append(self, text):
        self._parts.append(text)

    def clear(self):
        self._parts = []


class _LineState(Enum):
    SCANNING = "scanning"  # indent and fence marker may still be growing
    AFTER_MARKER = "after_marker"  # a fence marker ended; reading its info
    PLAIN = "plain"  # not a fence line


class _FenceTracker:
    """Follows fenced code blocks (``` or ~~~) in text fed piece by piece.

    Only the start of each line is examined character by character, so the
    cost stays linear in the text. Fences inside block quotes or list items
    and inline code spans are not recognised: a closer there counts as
    outside code.
    """

    def __init__(self):
        self._open_fence = None  # (marker character, marker length)
        self._start_line()

    @property
    def inside(self) -> bool:
        """Whether the end of the text so far is in a fence or on a fence line."""
        return self._open_fence is not None or self._marker_length >= 3

    def feed(self, text):
        *full_lines, last_line = text.split("\n")
        for line in full_lines:
            self._read_line_piece(line)
            self._end_line()
        self._read_line_piece(last_line)

    def _start_line(self):
        self._line_state = _LineState.SCANNING
        self._indent = 0
        self._marker_char = ""
        self._marker_length = 0
        self._info_has_backtick = False
        self._info_has_text = False

    def _read_line_piece(self, piece):
        position = 0
        while self._line_state is _LineState.SCANNING and position < len(piece):
            if self._scan(piece[position]):
                position += 1

        if self._line_state is _LineState.AFTER_MARKER:
            info = piece[position:]
            self._info_has_backtick |= "`" in info
            self._info_has_text |= bool(info.strip())

    def _scan(self, char):
        """Read one character of the line's start; False leaves it unread."""
        if self._marker_length == 0 and char == " " and self._indent < 3:
            self._indent += 1
        elif char in "`~" and self._marker_char in ("", char):
            self._marker_char = char
            self._marker_length += 1
        elif self._marker_length >= 3:
            self._line_state = _LineState.AFTER_MARKER
            return False
        else:
            self._line_state = _LineState.PLAIN
        return True

    def _end_line(self):
        if self._marker_length >= 3:
            self._read_fence_line()
        self._start_line()

    def _read_fence_line(self):
        if self._open_fence is None:
            # A backtick fence's info string may not contain backticks.
            if not (self._marker_char == "`" and self._info_has_backtick):
                self._open_fence = (self._marker_char, self._marker_length)
            return

        open_char, open_length = self._open_fence
        closes = (
            self._marker_char == open_char
            and self._marker_length >= open_length
            and not self._info_has_text
        )
        if closes:
            self._open_fence = None
