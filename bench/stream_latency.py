"""How much later than a direct client does the browser see a reply think?

For each concurrency level N, N chats ask the app at once through the
browser's protocol (sign in, websocket, "send"), and N plain SSE clients ask
the model simulator directly, in alternating rounds. Both are timed from the
moment the simulator wrote a reply's first reasoning chunk (it records that
per tag: see the `tag` directive in assistant/simulator/server.py) to the
moment the client received it: the first `reasoning` event on the websocket,
or the first chunk carrying reasoning_content on the SSE stream. The
difference is what the app adds: the worker reading the stream, the channel
layer, Daphne and the websocket.

    .venv/bin/python bench/stream_latency.py
    .venv/bin/python bench/stream_latency.py --concurrency 1,10 --rounds 5
    .venv/bin/python bench/stream_latency.py \\
        --redis-url redis://127.0.0.1:6379/14 \\
        --database-url postgres://postgres@127.0.0.1:5432/bench_latency

The simulator runs inside this process. The app is started with
scripts/run.py, as `make run` starts it, on a free port with a temporary
DATA_DIR; without --redis-url and --database-url that is the embedded
default (SQLite, in-memory channel layer, worker thread inside Daphne).
The database named by --database-url should be a fresh one made for the
benchmark: users bench1..benchN are replaced in it.
"""

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

BASE_DIR = Path(__file__).resolve().parent.parent
# Run as a script from bench/, which puts bench/ and not the project on the path.
sys.path.insert(0, str(BASE_DIR))

from chatclient import SignInError, free_port  # noqa: E402
from chatclient import log_in as client_log_in  # noqa: E402

from assistant.simulator import SimulatorConfig, SimulatorServer  # noqa: E402

# About 270 chunks of 4 characters, 10 ms apart: a reply lasts under 3 s, so
# the chats of one round overlap for long enough, and many rounds fit.
SIMULATOR_CONFIG = SimulatorConfig(
    token_delay=0.01, first_token_delay=0.05, chunk_chars=4
)
MODEL = "deepseek-r1"
QUESTION = "How long does light take to cross a proton?"
REASONING_MARKER = b'"reasoning_content":'

# Rounds per level unless --rounds says otherwise: enough for this many
# samples, and never fewer than MIN_ROUNDS.
TARGET_SAMPLES = 30
MIN_ROUNDS = 3
# Below the simulator's memory of 1000 tags, with room for a round of each kind.
MAX_CONCURRENCY = 200

DEFAULT_TIMEOUT_SECONDS = 900
STARTUP_SECONDS = 120
SETUP_SECONDS = 180
ROUND_SECONDS = 180
# How long after the simulator's last reply a chat may still wait for `end`.
END_GRACE_SECONDS = 10
IDLE_SECONDS = 10
STOP_SECONDS = 25
LOG_TAIL_LINES = 40
# The prefix of everything this run puts in Redis, so that no other worker
# takes its tasks and its keys can be removed afterwards.
REDIS_NAME = f"bench-latency-{os.getpid()}"


class BenchError(Exception):
    """A step of the benchmark failed; the message says which."""


@dataclass
class Chats:
    """The signed-in browsers of one concurrency level."""

    env: dict
    cookies: list

    @property
    def count(self):
        return len(self.cookies)


@dataclass
class AppChat:
    """One question asked through the app, filled in as its events arrive."""

    tag: str
    sent_at: float | None = None
    first_reasoning_at: float | None = None
    # The status of the `end` event, or what happened instead.
    outcome: str = "no end event"


@dataclass
class LevelResult:
    """Latencies of one concurrency level, in seconds."""

    concurrency: int
    app: list = field(default_factory=list)
    baseline: list = field(default_factory=list)
    # From the websocket send to the first reasoning event: what a user waits.
    waits: list = field(default_factory=list)
    # How the chats that did not end with "stop" ended, and how many.
    failures: Counter = field(default_factory=Counter)


def concurrency_levels(text):
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None

    if not levels or not all(1 <= level <= MAX_CONCURRENCY for level in levels):
        raise argparse.ArgumentTypeError(f"levels must be 1-{MAX_CONCURRENCY}")
    return levels


def positive_int(text):
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return number


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--concurrency",
        type=concurrency_levels,
        default=[1, 50],
        help="comma-separated numbers of concurrent chats (default 1,50)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        help=f"rounds per level (default: enough for {TARGET_SAMPLES} samples, "
        f"at least {MIN_ROUNDS})",
    )
    parser.add_argument("--redis-url", help="REDIS_URL for the app")
    parser.add_argument("--database-url", help="DATABASE_URL for the app")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory and logs"
    )
    parser.add_argument(
        "--timeout",
        type=positive_int,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT_SECONDS})",
    )
    return parser.parse_args()


def main():
    args = parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, _exit_on_signal)
    signal.alarm(args.timeout)

    work_dir = Path(tempfile.mkdtemp(prefix="bench-stream-latency-"))
    simulator = SimulatorServer(host="127.0.0.1", port=0, config=SIMULATOR_CONFIG)
    simulator.start()
    app = None
    try:
        env = app_environment(args, simulator, work_dir)
        app = start_app(env, work_dir / "app.log")
        wait_until_answering(f"{app_url(env)}/accounts/login/", app)
        results = run_bench(args, env, simulator)
        print_report(args, results)
    except BenchError as error:
        print_log_tail(work_dir / "app.log")
        sys.exit(f"stream_latency: {error}")
    finally:
        clean_up(args, app, simulator, work_dir)


_stop_reason = None


def _exit_on_signal(signum, frame):
    global _stop_reason
    if signum == signal.SIGALRM:
        _stop_reason = "stream_latency: gave up at the --timeout limit"
    else:
        _stop_reason = f"stream_latency: stopped by {signal.Signals(signum).name}"

    # SystemExit, not an ordinary exception: asyncio lets it through from any
    # callback, so the cleanup in main() runs wherever the signal lands.
    raise SystemExit(_stop_reason)


def stop_if_signalled():
    # Python ignores an exception raised in a finalizer, so the handler's
    # SystemExit can be lost; the loops check again.
    if _stop_reason:
        raise SystemExit(_stop_reason)


def clean_up(args, app, simulator, work_dir):
    # A second Ctrl+C must not leave the app's processes behind.
    signal.alarm(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    # Tasks cancelled by an interruption are collected at exit, each with a
    # "never retrieved" report that says nothing new.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    # The model first: a reply still streaming would hold up the app's exit.
    simulator.stop()
    stop_app(app)
    if args.redis_url:
        forget_redis_keys(args.redis_url)
    if args.keep:
        progress(f"kept {work_dir} (app log: {work_dir / 'app.log'})")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)


def forget_redis_keys(redis_url):
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        # Not REDIS_NAME*, which would also match the keys of a process whose
        # id starts with this one's.
        names = (REDIS_NAME, f"{REDIS_NAME}[^0-9]*", f"_kombu.*.{REDIS_NAME}")
        for pattern in names:
            keys = list(client.scan_iter(pattern, count=1000))
            if keys:
                client.delete(*keys)
    except redis.RedisError as error:
        progress(f"could not remove this run's keys from Redis: {error}")
    finally:
        client.close()


def progress(text):
    print(text, file=sys.stderr, flush=True)


def app_environment(args, simulator, work_dir):
    env = dict(os.environ)
    for inherited in ("DATABASE_URL", "REDIS_URL", "USING_SIMULATOR"):
        env.pop(inherited, None)

    env.update(
        HOST="127.0.0.1",
        PORT=str(free_port()),
        ALLOWED_HOSTS="127.0.0.1",
        MODEL_API_BASE_URL=simulator.url,
        DATA_DIR=str(work_dir / "data"),
        STATIC_ROOT=str(work_dir / "static"),
        DEMO_PASSWORD=secrets.token_urlsafe(16),
        PYTHONUNBUFFERED="1",
    )
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    if args.redis_url:
        env.update(
            REDIS_URL=args.redis_url,
            CELERY_QUEUE=REDIS_NAME,
            CHANNELS_PREFIX=REDIS_NAME,
            CACHE_PREFIX=REDIS_NAME,
            EVENTLOG_PREFIX=REDIS_NAME,
        )
    return env


def app_url(env):
    return f"http://{env['HOST']}:{env['PORT']}"


def start_app(env, log_path):
    progress(f"starting the app at {app_url(env)} ...")
    with open(log_path, "wb") as log:
        # A session of its own: Ctrl+C reaches only this script, which then
        # stops run.py, which stops Daphne and the worker in turn.
        return subprocess.Popen(
            [sys.executable, "scripts/run.py"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until_answering(url, app):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        stop_if_signalled()
        if app.poll() is not None:
            raise BenchError(f"scripts/run.py exited with code {app.returncode}")
        try:
            with opener.open(url, timeout=5):
                return
        except OSError:
            time.sleep(0.3)
    raise BenchError(f"the app did not answer at {url} within {STARTUP_SECONDS} s")


def stop_app(app):
    if app is None:
        return

    if app.poll() is None:
        app.terminate()
        try:
            app.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            progress("scripts/run.py did not stop in time; killing its processes")

    # Whatever is left in the app's own process group: a child that run.py
    # could not stop, or a manage.py step it was running when it was ended.
    try:
        os.killpg(app.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    app.wait()


def print_log_tail(log_path):
    if not log_path.exists():
        return
    lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    progress("--- last lines of the app's log ---")
    progress("\n".join(lines))


CREATE_USERS = """
import os
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password

users = get_user_model()
names = os.environ["BENCH_USERS"].split()
password = make_password(os.environ["BENCH_PASSWORD"])
users.objects.filter(username__in=names).delete()
users.objects.bulk_create(users(username=name, password=password) for name in names)
"""


def create_users(env, count):
    """Users bench1..bench<count>, all with the demo password."""
    names = [f"bench{number}" for number in range(1, count + 1)]
    users_env = {**env, "BENCH_USERS": " ".join(names)}
    users_env["BENCH_PASSWORD"] = env["DEMO_PASSWORD"]

    try:
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-v", "0", "-c", CREATE_USERS],
            cwd=BASE_DIR,
            env=users_env,
            check=True,
            capture_output=True,
            timeout=SETUP_SECONDS,
        )
    except subprocess.CalledProcessError as error:
        raise BenchError(f"could not create users: {error.stderr.decode()}") from None
    return names


def log_in(base_url, username, password):
    try:
        return client_log_in(base_url, username, password)
    except SignInError as error:
        raise BenchError(str(error)) from None


def sign_in_users(env, count):
    progress(f"creating and signing in {count} users ...")
    names = create_users(env, count)

    # Daphne runs sync views one at a time, so more threads would only queue.
    with ThreadPoolExecutor(max_workers=4) as pool:
        cookies = pool.map(
            lambda name: log_in(app_url(env), name, env["DEMO_PASSWORD"]), names
        )
        return list(cookies)


def rounds_for(args, concurrency):
    if args.rounds:
        return args.rounds
    return max(MIN_ROUNDS, math.ceil(TARGET_SAMPLES / concurrency))


def run_bench(args, env, simulator):
    cookies = sign_in_users(env, max(args.concurrency))
    rounds = {level: rounds_for(args, level) for level in args.concurrency}
    return asyncio.run(measure_levels(env, simulator, cookies, rounds))


async def measure_levels(env, simulator, cookies, rounds):
    await warm_up(env, simulator, cookies[:1])
    results = []
    for concurrency, level_rounds in rounds.items():
        chats = Chats(env, cookies[:concurrency])
        results.append(await measure_level(chats, simulator, level_rounds))
    return results


async def open_sockets(env, cookies):
    url = f"ws://{env['HOST']}:{env['PORT']}/ws/chat/"
    opening = [
        connect(
            url,
            origin=app_url(env),
            additional_headers={"Cookie": cookie},
            proxy=None,
            open_timeout=30,
        )
        for cookie in cookies
    ]
    try:
        return await asyncio.wait_for(asyncio.gather(*opening), SETUP_SECONDS)
    except (TimeoutError, OSError, WebSocketException) as error:
        problem = f"could not open {len(cookies)} websockets: {error!r}"
        raise BenchError(problem) from None


async def warm_up(env, simulator, cookies):
    """One uncounted chat each way: first connections, caches, worker start."""
    progress("warming up ...")
    result = LevelResult(concurrency=1)
    await run_baseline_round(1, simulator, result, "warm")
    await run_app_round(Chats(env, cookies), simulator, result, "warm")
    if result.failures:
        raise BenchError(f"the warm-up chat failed: {dict(result.failures)}")


async def measure_level(chats, simulator, rounds):
    concurrency = chats.count
    result = LevelResult(concurrency)
    for number in range(rounds):
        stop_if_signalled()
        progress(f"{concurrency} concurrent chats: round {number + 1} of {rounds}")

        # Alternating, so that a drift in the machine's load hits both alike.
        label = f"{concurrency}-{number}"
        await run_baseline_round(concurrency, simulator, result, label)
        await run_app_round(chats, simulator, result, label)
    return result


async def run_baseline_round(concurrency, simulator, result, label):
    tags = [f"sse-{label}-{index}" for index in range(concurrency)]
    reading = asyncio.gather(*(read_simulator_stream(simulator, tag) for tag in tags))
    try:
        received = await asyncio.wait_for(reading, ROUND_SECONDS)
    except (TimeoutError, OSError) as error:
        raise BenchError(f"{concurrency} SSE streams: {error!r}") from None

    sent = simulator.stats["first_reasoning_sent"]
    for tag, received_at in zip(tags, received):
        if received_at is None or tag not in sent:
            result.failures["SSE stream without reasoning"] += 1
            continue
        result.baseline.append(received_at - sent[tag])
    await wait_until_simulator_idle(simulator)


async def run_app_round(chats, simulator, result, label):
    asked = [AppChat(f"app-{label}-{index}") for index in range(chats.count)]
    expected_requests = simulator.stats["requests"] + chats.count

    # Fresh websockets for each round, as pages opened to ask. With Redis, a
    # consumer that hears nothing for 5 s is closed with code 1011: redis-py's
    # default 5 s read timeout cuts channels_redis's 5 s BZPOPMIN. Sockets
    # kept open between rounds would end the benchmark instead of timing it.
    sockets = await open_sockets(chats.env, chats.cookies)
    asking = [
        asyncio.create_task(ask_app(ws, chat)) for ws, chat in zip(sockets, asked)
    ]
    try:
        await wait_for_chats(asking, simulator, expected_requests)
    finally:
        for task in asking:
            task.cancel()
        await asyncio.gather(*asking, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in sockets))

    sent = simulator.stats["first_reasoning_sent"]
    for chat in asked:
        if chat.outcome != "stop":
            result.failures[chat.outcome] += 1
        if chat.first_reasoning_at is None or chat.tag not in sent:
            continue
        result.app.append(chat.first_reasoning_at - sent[chat.tag])
        result.waits.append(chat.first_reasoning_at - chat.sent_at)
    await wait_until_simulator_idle(simulator)


async def wait_for_chats(tasks, simulator, expected_requests):
    """Until every chat has ended, or the simulator finished a while ago.

    An `end` event that the app loses would otherwise hold the round until
    its time limit.
    """
    deadline = time.monotonic() + ROUND_SECONDS
    served_at = None
    while time.monotonic() < deadline:
        stop_if_signalled()
        _done, pending = await asyncio.wait(tasks, timeout=0.2)
        if not pending:
            return

        stats = simulator.stats
        if stats["requests"] < expected_requests or stats["active"]:
            continue
        served_at = served_at or time.monotonic()
        if time.monotonic() - served_at > END_GRACE_SECONDS:
            return
    raise BenchError(f"{len(tasks)} chats did not end within {ROUND_SECONDS} s")


async def wait_until_simulator_idle(simulator):
    deadline = time.monotonic() + IDLE_SECONDS
    while simulator.stats["active"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def question_with_tag(tag):
    return f"{QUESTION} [[sim tag={tag}]]"


async def ask_app(ws, chat):
    """Send one question over the websocket and follow its reply to the end."""
    request = {
        "action": "send",
        "conversation_id": None,
        "text": question_with_tag(chat.tag),
        "model": MODEL,
        "client_token": chat.tag,
    }
    chat.sent_at = time.monotonic()
    try:
        await ws.send(json.dumps(request))
        await follow_reply(ws, chat)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else "without a close frame"
        chat.outcome = f"websocket closed {code}"


async def follow_reply(ws, chat):
    reply_id = None
    # Bounded by the round's time limit (wait_for_chats).
    while True:
        raw = await ws.recv()
        received_at = time.monotonic()
        message = json.loads(raw)

        if message["type"] == "refused":
            chat.outcome = f"refused {message['code']}"
            return
        if message["type"] == "posted":
            reply_id = message["reply"]["id"]
        if message["type"] != "replies":
            continue

        # Events travel in batches; a batch's events arrived together.
        for event in message["events"]:
            if event["message_id"] != reply_id:
                continue
            if event["kind"] == "reasoning" and chat.first_reasoning_at is None:
                chat.first_reasoning_at = received_at
            if event["kind"] == "end":
                chat.outcome = event["status"]
                return


async def read_simulator_stream(simulator, tag):
    """Stream one reply straight from the simulator, as a plain SSE client.

    Returns when the first chunk with reasoning arrived. The body is read as
    raw bytes: the marker is enough to spot that chunk, and parsing the
    chunked framing would only add the client's own delay.
    """
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": question_with_tag(tag)}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payload = json.dumps(body).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: {simulator.host}:{simulator.port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )

    reader, writer = await asyncio.open_connection(simulator.host, simulator.port)
    try:
        writer.write(head.encode() + payload)
        await writer.drain()
        return await read_until_closed(reader)
    finally:
        writer.close()
        await writer.wait_closed()


async def read_until_closed(reader):
    received = b""
    first_reasoning_at = None
    # Bounded by the round's time limit (within_round).
    while data := await reader.read(65536):
        read_at = time.monotonic()
        if first_reasoning_at is not None:
            continue

        received += data
        if REASONING_MARKER in received:
            first_reasoning_at = read_at
    return first_reasoning_at


def percentile(values, percent):
    """Nearest-rank percentile: a value that was measured, never interpolated."""
    ordered = sorted(values)
    rank = math.ceil(percent / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def configuration_name(args):
    database = "sqlite"
    if args.database_url:
        database = urllib.parse.urlsplit(args.database_url).scheme
    layer = "redis" if args.redis_url else "in-process"
    return f"{database}/{layer}"


def print_report(args, results):
    config = SIMULATOR_CONFIG
    print(
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    print(
        f"Simulator: first chunk after {config.first_token_delay * 1000:.0f} ms, "
        f"then {config.chunk_chars} characters every {config.token_delay * 1000:.0f} ms"
    )
    print()
    print("Simulator sent the first reasoning chunk -> client received it, in ms")
    print_latency_table(configuration_name(args), results)
    print()
    print("Websocket send -> first reasoning event (what a user waits), in ms")
    print_wait_table(configuration_name(args), results)
    print()
    note = (
        f"Figures are noisy: the app, the simulator and both kinds of client share "
        f"{os.cpu_count()} cores, and the p99 of a few dozen samples is close to "
        "their maximum. Repeat a run before trusting a difference."
    )
    print(textwrap.fill(note, width=88))


def print_latency_table(configuration, results):
    row = "{:<18} {:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}"
    print(
        row.format(
            "configuration", "chats", "samples", "app p50", "app p99",
            "sse p50", "sse p99", "ratio p50", "ratio p99",
        )
    )  # fmt: skip
    for result in results:
        if not result.app or not result.baseline:
            print(f"{configuration:<18} {result.concurrency:>5} no samples")
            continue

        app = [percentile(result.app, p) * 1000 for p in (50, 99)]
        baseline = [percentile(result.baseline, p) * 1000 for p in (50, 99)]
        ratios = [ratio(a, b) for a, b in zip(app, baseline)]
        print(
            row.format(
                configuration,
                result.concurrency,
                len(result.app),
                *(f"{ms:.3f}" for ms in app + baseline),
                *ratios,
            )
        )


def ratio(app_ms, baseline_ms):
    if baseline_ms <= 0:
        return "-"
    return f"{app_ms / baseline_ms:.1f}x"


def print_wait_table(configuration, results):
    row = "{:<18} {:>5} {:>7} {:>8} {:>8} {:>6}"
    print(row.format("configuration", "chats", "samples", "p50", "p99", "failed"))
    for result in results:
        cells = ["-", "-"]
        if result.waits:
            cells = [f"{percentile(result.waits, p) * 1000:.0f}" for p in (50, 99)]
        failed = sum(result.failures.values())
        print(
            row.format(
                configuration, result.concurrency, len(result.waits), *cells, failed
            )
        )

    for result in results:
        for outcome, count in result.failures.most_common():
            print(f"  {result.concurrency} concurrent: {count} x {outcome}")


if __name__ == "__main__":
    main()
