"""How many requests a model server takes at once: a bounded probe.

For each prompt size (the "context" of the seed's table) and each
concurrency, the probe sends that many streaming requests at once through
the app's own client (assistant.modelapi, the openai SDK) and measures them:
total output tokens a second, the mean rate of one request once its first
token came, how many did not finish within the timeout, and the mean time
to the first token. From that it suggests the ModelProfile fields that keep
the app's admission within what the server does in time.

The probe is bounded three ways: every request is cut at the timeout (so a
cell lasts at most that long), no more than max_requests are sent in all
(one of them measures the tokenizer), and once a cell has a request over the
timeout, cells at least as heavy (as many requests or more, prompts as long
or longer) are skipped: they could only do worse.

Prompts are sized with the server's own count: the first request sends a
known text and reads usage.prompt_tokens back; a server that does not report
usage is assumed to read four characters a token. Every prompt starts with
a different nonce, so that a server's prefix cache cannot serve it for free.
"""

import math
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

import openai

from assistant import failures
from assistant.backends import connection_for_model
from assistant.modelapi import get_client, open_chat_stream
from assistant.streaming import EventKind, ReplyParser, feed_sse_item, iter_sse

DEFAULT_CONCURRENCY = (1, 4, 8)
DEFAULT_CONTEXTS = (2048, 4096)
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_REQUESTS = 100
DEFAULT_MAX_TOKENS = 512
DEFAULT_PAUSE = 2.0
CONNECT_TIMEOUT = 10.0
# Used when the server does not report prompt tokens; the app's own
# estimate (chat.prompt.count_text_tokens) makes the same assumption.
FALLBACK_CHARS_PER_TOKEN = 4.0
CALIBRATION_CHARS = 4000
INSTRUCTION = (
    "Read the notes below, then write a detailed essay of at least 800 words "
    "on what they describe.\n\n"
)
FILLER = (
    "The committee reviewed the measurements of each instrument in turn, "
    "noting where the calibration drifted, by how much, and what the "
    "technicians changed before the next series of observations began. "
)


@dataclass
class RequestResult:
    tokens: int = 0
    first_token_s: float | None = None
    duration_s: float = 0.0
    # The server ended the reply within the timeout.
    finished: bool = False
    timed_out: bool = False
    error: str = ""

    @property
    def rate(self):
        """Tokens a second once the first token came; None without one."""
        if self.first_token_s is None or self.tokens < 2:
            return None
        generating = self.duration_s - self.first_token_s
        return self.tokens / generating if generating > 0 else None


@dataclass
class Cell:
    context: int
    concurrency: int
    requests: list = field(default_factory=list)
    wall_s: float = 0.0
    # Why the cell was not run; empty if it was.
    skipped: str = ""

    @property
    def ran(self):
        return not self.skipped

    @property
    def ok(self):
        """Ran, and every request finished within the timeout."""
        return self.ran and all(r.finished and not r.error for r in self.requests)

    @property
    def total_rate(self):
        tokens = sum(r.tokens for r in self.requests)
        return tokens / self.wall_s if self.wall_s else 0.0

    @property
    def mean_request_rate(self):
        rates = [r.rate for r in self.requests if r.rate is not None]
        return statistics.fmean(rates) if rates else None

    @property
    def over_timeout(self):
        return sum(r.timed_out for r in self.requests)

    @property
    def errors(self):
        return sum(bool(r.error) for r in self.requests)

    @property
    def mean_first_token_s(self):
        waits = [r.first_token_s for r in self.requests if r.first_token_s is not None]
        return statistics.fmean(waits) if waits else None


@dataclass
class Suggestion:
    """ModelProfile fields from a probe; None where the probe cannot say."""

    safe: dict
    concurrency_limit: int | None = None
    long_prompt_tokens: int | None = None
    long_prompt_cost: int | None = None
    input_limit: int | None = None
    reasons: list = field(default_factory=list)

    def profile_fields(self):
        """{ModelProfile field: value} for the limits the probe could set."""
        names = (
            "concurrency_limit",
            "long_prompt_tokens",
            "long_prompt_cost",
            "input_limit",
        )
        return {
            name: getattr(self, name)
            for name in names
            if getattr(self, name) is not None
        }


class Probe:
    def __init__(
        self,
        model,
        concurrency=DEFAULT_CONCURRENCY,
        contexts=DEFAULT_CONTEXTS,
        timeout=DEFAULT_TIMEOUT,
        max_requests=DEFAULT_MAX_REQUESTS,
        max_tokens=DEFAULT_MAX_TOKENS,
        pause=DEFAULT_PAUSE,
        progress=None,
        skip_heavier=True,
        connection=None,
    ):
        self.model = model
        # A benchmark probes a server the app's database does not know.
        self.connection = connection or connection_for_model(model)
        self.concurrency = sorted(set(concurrency))
        self.contexts = sorted(set(contexts))
        self.timeout = timeout
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.pause = pause
        self.progress = progress or (lambda text: None)
        # A benchmark replaying a whole grid turns the skipping off.
        self.skip_heavier = skip_heavier
        self.sent = 0
        self.chars_per_token = FALLBACK_CHARS_PER_TOKEN
        self.calibrated = False

    def run(self):
        """Every cell of the grid, run or skipped, smallest prompts first."""
        self._calibrate()
        cells = []
        for context in self.contexts:
            for concurrency in self.concurrency:
                cell = Cell(context, concurrency)
                cell.skipped = self._reason_to_skip(cell, cells)
                if not cell.skipped:
                    self._run_cell(cell)
                cells.append(cell)
        return cells

    def _reason_to_skip(self, cell, done):
        for earlier in done if self.skip_heavier else []:
            heavier = (
                cell.concurrency >= earlier.concurrency
                and cell.context >= earlier.context
            )
            if earlier.ran and not earlier.ok and heavier:
                return (
                    f"{earlier.concurrency} x {earlier.context} tokens already "
                    "went over the timeout"
                )
        if self.sent + cell.concurrency > self.max_requests:
            return f"would pass --max-requests {self.max_requests}"
        return ""

    def _calibrate(self):
        """Read the server's tokens per character off one small request."""
        if self.sent + 1 > self.max_requests:
            return
        text = _filler(CALIBRATION_CHARS)
        self.sent += 1
        try:
            completion = get_client(self.connection).chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": text}],
                max_tokens=1,
                timeout=openai.Timeout(self.timeout, connect=CONNECT_TIMEOUT),
            )
        except openai.OpenAIError as exc:
            code, detail = failures.classify(exc)
            self.progress(
                f"calibration request failed ({code} {detail}); assuming "
                f"{FALLBACK_CHARS_PER_TOKEN:g} characters a token"
            )
            return

        usage = completion.usage
        if usage and usage.prompt_tokens:
            self.chars_per_token = len(text) / usage.prompt_tokens
            self.calibrated = True

    def _run_cell(self, cell):
        self.progress(
            f"{cell.concurrency} concurrent requests of {cell.context} tokens ..."
        )
        cell.requests = [RequestResult() for _ in range(cell.concurrency)]
        start = threading.Barrier(cell.concurrency + 1)
        threads = [
            threading.Thread(
                target=self._request, args=(cell.context, result, start), daemon=True
            )
            for result in cell.requests
        ]
        for thread in threads:
            thread.start()
        self.sent += cell.concurrency

        start.wait()
        began = time.monotonic()
        # Every request is cut at the timeout; this only guards against a
        # thread stuck where no cut reaches it (connecting, say).
        give_up_at = began + self.timeout + CONNECT_TIMEOUT + 5
        for thread in threads:
            thread.join(max(0.0, give_up_at - time.monotonic()))
        cell.wall_s = time.monotonic() - began
        # Cut requests may still hold the server for a moment.
        time.sleep(self.pause)

    def _request(self, context, result, start):
        messages = [{"role": "user", "content": self._prompt(context)}]
        start.wait()
        began = time.monotonic()
        stream = None
        try:
            with open_chat_stream(
                self.model,
                messages,
                self.max_tokens,
                connection=self.connection,
                timeout=openai.Timeout(self.timeout, connect=CONNECT_TIMEOUT),
            ) as stream:
                cutter = threading.Timer(self.timeout, stream.cut)
                cutter.start()
                try:
                    self._read(stream, result, began)
                finally:
                    cutter.cancel()
        except Exception as exc:  # noqa: BLE001 - every failure is a result
            if stream is not None and stream.cut_requested.is_set():
                # Closing the response under a reader can raise almost
                # anything from the HTTP library; the cause was the timeout.
                result.timed_out = True
            else:
                self._note_failure(result, exc)
        result.duration_s = time.monotonic() - began

    def _read(self, stream, result, began):
        parser = ReplyParser()
        chunks = 0
        try:
            for item in iter_sse(stream.lines()):
                for event in feed_sse_item(item, parser):
                    if event.kind in (EventKind.REASONING, EventKind.ANSWER):
                        chunks += 1
                        if result.first_token_s is None:
                            result.first_token_s = time.monotonic() - began
                if parser.ended:
                    break
        except (*failures.TRANSPORT_ERRORS, OSError):
            if not stream.cut_requested.is_set():
                raise

        usage = parser.usage
        reported = usage.completion_tokens if usage else None
        # Servers send about one token a chunk; their own count is better.
        result.tokens = reported if reported is not None else chunks
        if stream.cut_requested.is_set():
            result.timed_out = True
        elif parser.error is not None:
            result.error = f"in_band {parser.error.message}"[:200]
        else:
            result.finished = parser.ended

    def _note_failure(self, result, exc):
        code, detail = failures.classify(exc)
        if code == "timeout":
            result.timed_out = True
        else:
            result.error = f"{code} {detail}".strip()[:200]

    def _prompt(self, tokens):
        return build_prompt(tokens, self.chars_per_token)


def build_prompt(tokens, chars_per_token):
    """A prompt of about `tokens` tokens, unlike any other (a nonce first)."""
    nonce = f"Probe {uuid.uuid4().hex}. "
    wanted_chars = int(tokens * chars_per_token)
    body = _filler(wanted_chars - len(nonce) - len(INSTRUCTION))
    return nonce + INSTRUCTION + body


def _filler(chars):
    repeats = chars // len(FILLER) + 1
    return (FILLER * repeats)[: max(0, chars)]


def suggest(cells, timeout):
    """Profile limits from the cells: what every request finished in time at.

    For each prompt size the safe concurrency is the largest one below the
    first that went over the timeout. The smallest prompt size gives the
    concurrency limit; the first larger size that is safe at less makes
    prompts longer than the size before it "long", costing enough units that
    no more of them run than were safe; a size at which not even one request
    finished caps the input limit below it.
    """
    contexts = sorted({cell.context for cell in cells})
    safe = {context: _safe_concurrency(cells, context) for context in contexts}
    suggestion = Suggestion(safe=safe)
    if not contexts:
        return suggestion

    shortest = contexts[0]
    limit = safe[shortest]
    if not limit:
        suggestion.reasons.append(
            f"No concurrency at {shortest} tokens finished within {timeout:g} s: "
            "the server is down or slower than the timeout; nothing to suggest."
        )
        return suggestion

    suggestion.concurrency_limit = limit
    suggestion.reasons.append(
        f"concurrency_limit = {limit}: {limit} concurrent prompts of "
        f"{shortest} tokens all finished within {timeout:g} s."
    )
    _suggest_long_prompts(suggestion, contexts, timeout)
    return suggestion


def _suggest_long_prompts(suggestion, contexts, timeout):
    safe, limit = suggestion.safe, suggestion.concurrency_limit
    last_full = contexts[0]
    for context in contexts[1:]:
        if safe[context] == 0:
            suggestion.input_limit = _previous(contexts, context)
            suggestion.reasons.append(
                f"input_limit <= {suggestion.input_limit}: not one prompt of "
                f"{context} tokens finished within {timeout:g} s."
            )
            return
        if safe[context] >= limit:
            last_full = context
            continue
        if suggestion.long_prompt_tokens is None:
            suggestion.long_prompt_tokens = last_full + 1
        cost = math.ceil(limit / safe[context])
        suggestion.long_prompt_cost = max(suggestion.long_prompt_cost or 1, cost)
        suggestion.reasons.append(
            f"long_prompt_tokens = {suggestion.long_prompt_tokens}, "
            f"long_prompt_cost = {suggestion.long_prompt_cost}: only "
            f"{safe[context]} prompt(s) of {context} tokens finished in time, "
            f"against {limit} of {contexts[0]}; sizes between {last_full} and "
            f"{context} were not probed, so the threshold errs low."
        )


def _previous(contexts, context):
    return contexts[contexts.index(context) - 1]


def _safe_concurrency(cells, context):
    safe = 0
    for cell in sorted(
        (c for c in cells if c.context == context and c.ran),
        key=lambda c: c.concurrency,
    ):
        if not cell.ok:
            break
        safe = cell.concurrency
    return safe
