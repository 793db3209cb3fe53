"""The seed's capacity grid, straight at the model server and through the app.

The simulator runs in capacity mode (assistant/simulator/capacity.py: the
throughput of R1 671B on two 8-GPU hosts, its slowdown as requests pile up,
its stalls under long prompts), faster than the real server by --time-scale.
The grid of concurrency by prompt size is replayed twice in one run:

1. straight at the simulator, by the capacity probe (assistant/capacity_probe.py)
   with every cell run, as the seed's operators ran it;
2. through the app, as that many signed-in users each sending one question
   over the chat websocket at the same moment. The app's model profile is
   first set to the limits the probe suggests from the first pass, as an
   operator would set them. One uncounted question first warms the app up
   and measures what it adds to a question's prompt (system prompt, chat
   template); the cells' questions are that much shorter, so that the model
   sees prompts of the same size in both passes. Each cell starts once the
   simulator has been idle a while, so that the titles the app asks for one
   cell's conversations do not compete with the next cell.

Both tables are printed side by side: total tok/s, mean tok/s of one request
once it started, requests over the timeout (the seed's 60 s), errors, and,
through the app, prompts it refused as too long for the model, the worst
time a user who had to queue waited to see their place, the worst time a
user let straight through waited to see the reply start, the longest gap
between two queue updates, and the requests the app made besides the
replies (titles).

    .venv/bin/python bench/capacity.py                  # 1,4,16 x 2k,4k
    .venv/bin/python bench/capacity.py --grid full      # 1..64 x 2k,4k,8k
    .venv/bin/python bench/capacity.py --concurrency 1,8 --context 2048

Token rates and request times are given in the seed server's time: the
measured figures multiplied (rates) or divided (times) by the time scale.
The queue-position times are real seconds: the app's promise of an update a
second does not scale. The app is started as bench/stream_latency.py starts
it (scripts/run.py, embedded default unless --redis-url and
--database-url), and its helpers are used for that and for signing in.
"""

import argparse
import asyncio
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import stream_latency
from stream_latency import (
    BASE_DIR,
    END_GRACE_SECONDS,
    SETUP_SECONDS,
    BenchError,
    app_environment,
    app_url,
    clean_up,
    open_sockets,
    print_log_tail,
    progress,
    sign_in_users,
    start_app,
    stop_if_signalled,
    wait_until_answering,
)
from websockets.exceptions import ConnectionClosed

from assistant.simulator import SimulatorConfig, SimulatorServer

GRIDS = {
    "small": ([1, 4, 16], [2048, 4096]),
    "full": ([1, 4, 8, 16, 32, 64], [2048, 4096, 8192]),
}
MODEL = "deepseek-v3"
SEED_TIMEOUT_SECONDS = 60.0
DEFAULT_TIME_SCALE = 0.1
# Two characters a chunk make a reply of about 350 tokens: long enough that
# 32 concurrent 2k prompts run past the seed's 60 s, as they did there.
SIMULATOR_CHUNK_CHARS = 2
SIMULATOR_FIRST_TOKEN_SECONDS = 0.1
PAUSE_SECONDS = 1.0
# Between two cells through the app, the simulator must have been idle this
# long (at most QUIET_LIMIT_SECONDS): the titles the app asks for the
# conversations of one cell would otherwise compete with the next one.
QUIET_SECONDS = 5.0
QUIET_LIMIT_SECONDS = 90.0
# The warm-up question, in tokens: it also measures what the app adds to a
# question (system prompt, chat template), which the cells' questions leave
# room for, so that the model sees prompts of the same size in both passes.
WARM_UP_TOKENS = 256
DEFAULT_BENCH_TIMEOUT = 1800
# How long one cell through the app may take, in the seed's seconds per
# request it may have to wait behind (see app_cell_deadline).
APP_CELL_SLACK_SECONDS = 30


class _Args:
    """What stream_latency's helpers read from their own arguments."""

    def __init__(self, args):
        self.redis_url = args.redis_url
        self.database_url = args.database_url
        self.keep = args.keep


@dataclass
class AppChat:
    """One user's question through the app, filled in as its events arrive."""

    sent_at: float = 0.0
    first_notice_at: float | None = None
    admitted_at: float | None = None
    first_text_at: float | None = None
    ended_at: float | None = None
    last_queue_at: float | None = None
    # Shown a place in the queue before it started (else it went straight in).
    queued: bool = False
    # The first place came with the question (the app's estimate), not from
    # the worker's ticket.
    place_with_question: bool = False
    longest_queue_gap: float = 0.0
    status: str = "no end event"
    error_code: str = ""
    tokens: int = 0
    prompt_tokens: int | None = None


@dataclass
class AppCell:
    context: int
    concurrency: int
    chats: list = field(default_factory=list)
    wall_s: float = 0.0
    # Requests the simulator served in the cell besides its replies (titles).
    other_requests: int = 0
    # Every token the simulator generated during the cell, titles included.
    server_tokens: int = 0


def numbers(text):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"not a list of positive numbers: {text!r}")
    return values


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", choices=sorted(GRIDS), default="small")
    parser.add_argument("--concurrency", type=numbers, help="overrides the grid's")
    parser.add_argument("--context", type=numbers, help="prompt sizes in tokens")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        help=f"simulator time per seed second (default {DEFAULT_TIME_SCALE})",
    )
    parser.add_argument("--redis-url", help="REDIS_URL for the app")
    parser.add_argument("--database-url", help="DATABASE_URL for the app")
    parser.add_argument("--keep", action="store_true", help="keep the app's log")
    parser.add_argument(
        "--timeout",
        type=int,
        default=DEFAULT_BENCH_TIMEOUT,
        help=f"give up after this many seconds (default {DEFAULT_BENCH_TIMEOUT})",
    )
    args = parser.parse_args()
    concurrency, contexts = GRIDS[args.grid]
    args.concurrency = sorted(set(args.concurrency or concurrency))
    args.context = sorted(set(args.context or contexts))
    if not 0 < args.time_scale <= 1:
        parser.error("--time-scale must be above 0 and at most 1")
    return args


def main():
    args = parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, stream_latency._exit_on_signal)
    signal.alarm(args.timeout)

    work_dir = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    simulator = SimulatorServer(
        host="127.0.0.1", port=0, config=simulator_config(args)
    ).start()
    app = None
    try:
        env = app_environment(_Args(args), simulator, work_dir)
        direct, probe = run_direct(args, env, simulator)
        limits = suggested_limits(direct, args)
        app = start_app(env, work_dir / "app.log")
        wait_until_answering(f"{app_url(env)}/accounts/login/", app)
        set_profile(env, limits)
        through_app, added_tokens = run_through_app(
            args, env, simulator, probe.chars_per_token
        )
        print_report(args, direct, through_app, limits, probe, added_tokens)
    except BenchError as error:
        print_log_tail(work_dir / "app.log")
        sys.exit(f"capacity: {error}")
    finally:
        clean_up(_Args(args), app, simulator, work_dir)


def simulator_config(args):
    return SimulatorConfig(
        first_token_delay=SIMULATOR_FIRST_TOKEN_SECONDS,
        chunk_chars=SIMULATOR_CHUNK_CHARS,
        keepalive=1.0,
        capacity_mode=True,
        capacity_time_scale=args.time_scale,
    )


def timeout_seconds(args):
    """The seed's 60 s in the simulator's time."""
    return SEED_TIMEOUT_SECONDS * args.time_scale


def run_direct(args, env, simulator):
    """The whole grid straight at the simulator, through the capacity probe."""
    progress("straight at the model server:")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="assistant.settings",
        MODEL_API_BASE_URL=simulator.url,
        DATA_DIR=env["DATA_DIR"],
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()
    from assistant.backends import default_connection
    from assistant.capacity_probe import Probe

    probe = Probe(
        MODEL,
        concurrency=args.concurrency,
        contexts=args.context,
        timeout=timeout_seconds(args),
        max_requests=1 + len(args.context) * sum(args.concurrency),
        pause=PAUSE_SECONDS,
        progress=lambda text: progress(f"  {text}"),
        skip_heavier=False,
        connection=default_connection(),
    )
    return probe.run(), probe


def suggested_limits(cells, args):
    from assistant.capacity_probe import suggest

    # The cells know what went over; the timeout only words the reasons.
    suggestion = suggest(cells, SEED_TIMEOUT_SECONDS)
    if suggestion.concurrency_limit is None:
        raise BenchError("the probe found no concurrency the server handles in time")
    return suggestion


SET_PROFILE = """
import json, os
from assistant.models import ModelProfile
profile = ModelProfile.ensure(os.environ["BENCH_MODEL"])
limits = json.loads(os.environ["BENCH_LIMITS"])
for name, value in limits.items():
    setattr(profile, name, value)
profile.save(update_fields=list(limits))
"""


def set_profile(env, suggestion):
    """Give the app's profile of MODEL the probe's suggested limits."""
    limits = {
        name: getattr(suggestion, name)
        for name in (
            "concurrency_limit",
            "long_prompt_tokens",
            "long_prompt_cost",
            "input_limit",
        )
        if getattr(suggestion, name) is not None
    }
    progress(f"setting the app's profile of {MODEL}: {limits}")
    profile_env = {**env, "BENCH_MODEL": MODEL, "BENCH_LIMITS": json.dumps(limits)}
    try:
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-v", "0", "-c", SET_PROFILE],
            cwd=BASE_DIR,
            env=profile_env,
            check=True,
            capture_output=True,
            timeout=SETUP_SECONDS,
        )
    except subprocess.CalledProcessError as error:
        raise BenchError(
            f"could not set the profile: {error.stderr.decode()}"
        ) from None


def run_through_app(args, env, simulator, chars_per_token):
    cookies = sign_in_users(env, max(args.concurrency))
    return asyncio.run(measure_app(args, env, simulator, cookies, chars_per_token))


async def measure_app(args, env, simulator, cookies, chars_per_token):
    from assistant.capacity_probe import build_prompt

    progress("through the app:")
    added_tokens = await warm_up(env, simulator, cookies[0], chars_per_token)
    progress(f"  the app adds {added_tokens} tokens to a question's prompt")
    cells = []
    for context in args.context:
        for concurrency in args.concurrency:
            stop_if_signalled()
            await wait_until_quiet(simulator)
            progress(f"  {concurrency} users with prompts of {context} tokens ...")
            cell = AppCell(context, concurrency)
            question_tokens = max(1, context - added_tokens)
            await run_app_cell(
                args,
                env,
                simulator,
                cookies[:concurrency],
                cell,
                functools.partial(build_prompt, question_tokens, chars_per_token),
            )
            cells.append(cell)
    return cells, added_tokens


async def warm_up(env, simulator, cookie, chars_per_token):
    """One uncounted question: first connections and imports, and what the
    app adds to a question's prompt, in the model's tokens."""
    from assistant.capacity_probe import build_prompt

    (ws,) = await open_sockets(env, [cookie])
    chat = AppChat()
    try:
        await asyncio.wait_for(
            ask(ws, chat, build_prompt(WARM_UP_TOKENS, chars_per_token)),
            SETUP_SECONDS,
        )
    except TimeoutError:
        raise BenchError("the warm-up question did not end") from None
    finally:
        await ws.close()
    if chat.status not in ("stop", "length_in_answer") or not chat.prompt_tokens:
        raise BenchError(f"the warm-up question ended {chat.status}")
    return max(0, chat.prompt_tokens - WARM_UP_TOKENS)


async def wait_until_quiet(simulator):
    """Until the simulator has served nothing for QUIET_SECONDS, or the limit."""
    give_up_at = time.monotonic() + QUIET_LIMIT_SECONDS
    served = simulator.stats["requests"]
    quiet_since = time.monotonic()
    while time.monotonic() < give_up_at:
        stats = simulator.stats
        if stats["active"] or stats["requests"] != served:
            served, quiet_since = stats["requests"], time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_SECONDS:
            return
        await asyncio.sleep(0.2)
    await asyncio.sleep(PAUSE_SECONDS)


def app_cell_deadline(args, concurrency):
    """Long enough for every user to wait their turn behind the others."""
    per_request = SEED_TIMEOUT_SECONDS + APP_CELL_SLACK_SECONDS
    return concurrency * per_request * args.time_scale + SETUP_SECONDS


async def run_app_cell(args, env, simulator, cookies, cell, make_question):
    sockets = await open_sockets(env, cookies)
    cell.chats = [AppChat() for _ in cookies]
    before = simulator.stats
    asking = [
        asyncio.create_task(ask(ws, chat, make_question()))
        for ws, chat in zip(sockets, cell.chats)
    ]
    began = time.monotonic()
    try:
        await wait_for_chats(
            asking, simulator, app_cell_deadline(args, cell.concurrency)
        )
    finally:
        for task in asking:
            task.cancel()
        await asyncio.gather(*asking, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in sockets))
    ends = [chat.ended_at for chat in cell.chats if chat.ended_at]
    cell.wall_s = (max(ends) if ends else time.monotonic()) - began
    after = simulator.stats
    served = after["requests"] - before["requests"]
    cell.other_requests = max(0, served - len(cell.chats))
    cell.server_tokens = after["paced_tokens"] - before["paced_tokens"]


async def wait_for_chats(tasks, simulator, seconds):
    """Until every chat has ended, or the simulator has been idle a while.

    A chat whose `end` event the app loses would otherwise hold the cell
    until its deadline; it is counted as "no end event".
    """
    deadline = time.monotonic() + seconds
    served = simulator.stats["requests"]
    idle_since = None
    while time.monotonic() < deadline:
        stop_if_signalled()
        _done, pending = await asyncio.wait(tasks, timeout=0.2)
        if not pending:
            return

        stats = simulator.stats
        if stats["active"] or stats["requests"] != served:
            served, idle_since = stats["requests"], None
            continue
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since > END_GRACE_SECONDS:
            return


async def ask(ws, chat, text):
    request = {
        "action": "send",
        "conversation_id": None,
        "text": text,
        "model": MODEL,
        "client_token": f"capacity-{id(chat)}",
    }
    chat.sent_at = time.monotonic()
    try:
        await ws.send(json.dumps(request))
        await follow(ws, chat)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else "without a close frame"
        chat.status = f"websocket closed {code}"


async def follow(ws, chat):
    reply_id = None
    # Bounded by the cell's deadline (run_app_cell).
    while True:
        message = json.loads(await ws.recv())
        now = time.monotonic()
        if message["type"] == "refused":
            chat.status = f"refused {message['code']}"
            return
        if message["type"] == "posted":
            reply_id = message["reply"]["id"]
            if message.get("expected_queue"):
                # The place the reply may expect, shown with the question:
                # the first queue update, the worker's reports follow.
                chat.first_notice_at = chat.first_notice_at or now
                chat.last_queue_at = now
                chat.queued = True
                chat.place_with_question = True
        if message["type"] != "replies":
            continue

        for event in message["events"]:
            if event["message_id"] == reply_id:
                note_event(chat, event, now)
        if chat.ended_at is not None:
            return


def note_event(chat, event, now):
    kind = event["kind"]
    if kind == "queue":
        if chat.last_queue_at is not None:
            gap = now - chat.last_queue_at
            chat.longest_queue_gap = max(chat.longest_queue_gap, gap)
        chat.last_queue_at = now
        chat.first_notice_at = chat.first_notice_at or now
        chat.queued = chat.queued or chat.admitted_at is None
    elif kind == "status" and event.get("status") == "streaming":
        chat.admitted_at = now
        chat.first_notice_at = chat.first_notice_at or now
    elif kind in ("answer", "reasoning"):
        chat.first_text_at = chat.first_text_at or now
    elif kind == "end":
        chat.ended_at = now
        chat.first_notice_at = chat.first_notice_at or now
        chat.status = event["status"]
        chat.error_code = event.get("error_code") or ""
        usage = event.get("usage") or {}
        chat.tokens = usage.get("completion_tokens") or 0
        chat.prompt_tokens = usage.get("prompt_tokens")


@dataclass
class Row:
    """One cell's figures in the seed's time; None where there are none."""

    total_rate: float | None = None
    server_rate: float | None = None
    request_rate: float | None = None
    over: int = 0
    errors: int = 0
    refused: int = 0
    worst_place: float | None = None
    worst_start: float | None = None
    worst_gap: float | None = None
    other_requests: int = 0


def direct_row(cell, scale):
    rate = cell.mean_request_rate
    return Row(
        total_rate=cell.total_rate * scale,
        request_rate=None if rate is None else rate * scale,
        over=cell.over_timeout,
        errors=cell.errors,
    )


def app_row(cell, args):
    scale, timeout = args.time_scale, timeout_seconds(args)
    rates, over, errors, refused = [], 0, 0, 0
    for chat in cell.chats:
        if chat.error_code == "input_too_long":
            refused += 1
            continue
        if chat.status not in ("stop", "length_in_answer"):
            errors += 1
        if chat.admitted_at is None or chat.ended_at is None:
            continue
        if chat.ended_at - chat.admitted_at > timeout:
            over += 1
        if chat.first_text_at is not None and chat.ended_at > chat.first_text_at:
            rates.append(chat.tokens / (chat.ended_at - chat.first_text_at))

    tokens = sum(chat.tokens for chat in cell.chats)
    wall = cell.wall_s or None
    return Row(
        total_rate=tokens / wall * scale if wall else None,
        server_rate=cell.server_tokens / wall * scale if wall else None,
        request_rate=sum(rates) / len(rates) * scale if rates else None,
        over=over,
        errors=errors,
        refused=refused,
        worst_place=_worst_notice(chat for chat in cell.chats if chat.queued),
        worst_start=_worst_notice(chat for chat in cell.chats if not chat.queued),
        worst_gap=max((chat.longest_queue_gap for chat in cell.chats), default=None),
        other_requests=cell.other_requests,
    )


def _worst_notice(chats):
    """The longest wait between sending and the first notice, of `chats`."""
    waits = [
        chat.first_notice_at - chat.sent_at for chat in chats if chat.first_notice_at
    ]
    return max(waits, default=None)


def print_report(args, direct, through_app, limits, probe, added_tokens):
    print(
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    print(
        f"Simulator in capacity mode, {1 / args.time_scale:g}x the seed server's "
        f"speed; replies of about {average_tokens(direct):.0f} tokens; model {MODEL}; "
        f"{probe.sent} requests straight at it."
    )
    print(
        f"Through the app each question is {added_tokens} tokens shorter than the "
        "cell's prompt size: the app adds that many (system prompt, chat template)."
    )
    print("The app's profile, from the probe of the direct pass:")
    for reason in limits.reasons:
        print(f"  {reason}")
    print()
    head = (
        "{:>7} {:>5} | {:>7} {:>7} {:>6} {:>6} | {:>7} {:>7} {:>7} {:>6} {:>6} "
        "{:>7} {:>7} {:>7} {:>6} {:>5}"
    )
    print(
        head.format(
            "", "", "direct", "", "", "", "app", "", "", "", "", "", "", "", "", "",
        )
    )  # fmt: skip
    print(
        head.format(
            "context", "users", "tok/s", "per req", ">60 s", "errors",
            "tok/s", "all", "per req", ">60 s", "errors", "refused",
            "place s", "start s", "gap s", "other",
        )
    )  # fmt: skip
    app_cells = {(cell.context, cell.concurrency): cell for cell in through_app}
    for cell in direct:
        left = direct_row(cell, args.time_scale)
        right = app_row(app_cells[cell.context, cell.concurrency], args)
        print(
            head.format(
                cell.context,
                cell.concurrency,
                _figure(left.total_rate),
                _figure(left.request_rate),
                f"{left.over}/{cell.concurrency}",
                left.errors,
                _figure(right.total_rate),
                _figure(right.server_rate),
                _figure(right.request_rate),
                f"{right.over}/{cell.concurrency}",
                right.errors,
                right.refused,
                _figure(right.worst_place, "{:.2f}"),
                _figure(right.worst_start, "{:.2f}"),
                _figure(right.worst_gap, "{:.2f}"),
                right.other_requests,
            )
        )
    print_outcomes(through_app)
    print()
    print(
        "tok/s: all requests together (through the app: the users' replies); all: "
        "through the app, every token the server made during the cell, the "
        "app's own requests' too; per req: one request once its first token "
        "came (seed's time). >60 s: requests that took longer, timed from when the "
        "app let them through to the model; straight at the server they are cut "
        "there. refused: prompts the app did not send, as longer than the "
        "profile's input limit. place s: the longest a user who had to queue "
        "waited after sending to see their place; start s: the longest a user "
        "let straight through waited to see the reply start; gap s: the longest "
        "between two queue updates, the place shown with the question the first "
        "(all three real seconds). other: requests the "
        "app made besides the replies during the cell (conversation titles)."
    )


def print_outcomes(cells):
    """How the chats through the app that did not finish ended, per cell."""
    for cell in cells:
        outcomes = Counter(
            chat.error_code or chat.status
            for chat in cell.chats
            if chat.status not in ("stop", "length_in_answer")
        )
        for outcome, count in outcomes.most_common():
            print(f"  app, {cell.concurrency} x {cell.context}: {count} x {outcome}")


def average_tokens(cells):
    finished = [r.tokens for cell in cells for r in cell.requests if r.finished]
    return sum(finished) / len(finished) if finished else 0


def _figure(value, pattern="{:.1f}"):
    return "-" if value is None else pattern.format(value)


if __name__ == "__main__":
    main()
