"""How many signed-in chats at once the production layout carries, and at what cost.

Starts the production layout on loopback (bench/stack.py: two Daphne
processes, two Celery workers, one PostgreSQL database of its own, its own
redis-server) with the bundled simulator as the model server, then for each
N in --steps opens N websockets (spread over both Daphnes), asks N questions
at once and follows every reply to its end. Per step it prints:

- the gap between two moments new text of a reply reached a chat (p50/p99)
  against the simulator's own spacing between chunks, measured by N plain
  SSE clients straight at the simulator in the same step, and the
  difference: the latency the app adds;
- the resident memory of the Daphne and Celery processes while the N
  streams were open, less their memory before the step, per stream;
- whether every reply arrived whole: the text the socket delivered equals
  the stored reply, with no event number skipped and the reply finished.

It stops at the first step that loses a token or runs out of time, and
reports the largest N held with no lost token. Bounded: at most --max-chats
chats in one step and --seconds in all.
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "assistant.settings")

import chatclient  # noqa: E402
import psycopg  # noqa: E402
from stack import PG_URL, Stack, StackError  # noqa: E402

from assistant.simulator import SimulatorConfig, SimulatorServer  # noqa: E402

MODEL = "deepseek-v3"
# 20 ms between chunks of 4 characters: a fast GPU's pace, so that the
# app's own delay is not hidden under the model's.
TOKEN_DELAY = 0.02
WORDS = 60
USERS = 4
STEP_GRACE_SECONDS = 60


def positive_ints(text):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("numbers must be 1 or more")
    return sorted(set(values))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive_ints, default=[1, 8, 32, 64, 128])
    parser.add_argument("--max-chats", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--worker-threads", type=int, default=100)
    return parser.parse_args()


def progress(text):
    print(text, file=sys.stderr, flush=True)


def main():
    args = parse_args()
    steps = [n for n in args.steps if n <= args.max_chats]
    simulator = SimulatorServer(
        host="127.0.0.1",
        port=0,
        config=SimulatorConfig(
            token_delay=TOKEN_DELAY, first_token_delay=0.05, chunk_chars=4
        ),
    )
    simulator.start()
    work_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    stack = Stack(
        work_dir,
        f"assistant_bench_load_{os.getpid()}",
        simulator.url,
        settings={"LOG_LEVEL": "WARNING"},
    )
    try:
        progress("starting 2 Daphne, 2 Celery workers, PostgreSQL and Redis ...")
        stack.start(daphnes=2, workers=2, worker_threads=args.worker_threads)
        results = asyncio.run(run_steps(stack, simulator, steps, args.seconds))
        print_report(results)
    except StackError as error:
        sys.exit(f"bench/load.py: {error}")
    finally:
        stack.stop()
        simulator.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


async def run_steps(stack, simulator, steps, seconds):
    password = secrets.token_urlsafe(16)
    names = [f"load{number}" for number in range(1, USERS + 1)]
    stack.create_users(names, password)
    cookies = [
        chatclient.log_in(stack.url("daphne1"), name, password) for name in names
    ]
    await warm_up(stack, cookies[0])

    deadline = time.monotonic() + seconds
    results = []
    for count in steps:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            progress(f"out of time before {count} chats")
            break
        progress(f"{count} chats ...")
        result = await run_step(stack, simulator, cookies, count, remaining)
        results.append(result)
        if not result["whole"]:
            break
    return results


async def warm_up(stack, cookie):
    """One chat through each Daphne, then room for every chat in the pool."""
    for name in stack.daphnes:
        async with chatclient.open_socket(stack.url(name), cookie) as ws:
            follower = await chatclient.ask(ws, question("warm"), MODEL)
            await chatclient.follow_for(ws, follower, STEP_GRACE_SECONDS)
    # The bench measures the app's transport, not the admission queue.
    with psycopg.connect(f"{PG_URL}/{stack.database}") as db:
        db.execute(
            "UPDATE assistant_modelprofile SET concurrency_limit = 10000 "
            "WHERE name = %s",
            [MODEL],
        )


def question(tag):
    return f"Explain diffraction. [[sim words={WORDS} tag={tag}]]"


async def run_step(stack, simulator, cookies, count, seconds):
    baseline = await asyncio.wait_for(
        asyncio.gather(*(direct_gaps(simulator) for _ in range(count))), seconds
    )
    idle_rss = stack.rss_bytes()
    daphnes = list(stack.daphnes)
    peak_rss = [idle_rss]

    async def one_chat(number):
        url = stack.url(daphnes[number % len(daphnes)])
        async with chatclient.open_socket(url, cookies[number % len(cookies)]) as ws:
            follower = await chatclient.ask(ws, question(f"s{count}n{number}"), MODEL)
            return await chatclient.follow(ws, follower)

    async def sample_memory():
        while True:
            await asyncio.sleep(0.5)
            peak_rss.append(stack.rss_bytes())

    sampler = asyncio.create_task(sample_memory())
    try:
        followers = await asyncio.wait_for(
            asyncio.gather(
                *(one_chat(n) for n in range(count)), return_exceptions=True
            ),
            min(seconds, STEP_GRACE_SECONDS + count),
        )
    except TimeoutError:
        followers = []
    finally:
        sampler.cancel()

    return summarise(stack, count, followers, baseline, idle_rss, max(peak_rss))


def summarise(stack, count, followers, baseline, idle_rss, peak_rss):
    done = [f for f in followers if isinstance(f, chatclient.ReplyFollower)]
    stored = stored_answers(stack, [f.reply_id for f in done])
    whole = [
        f
        for f in done
        if f.status == "stop" and not f.gaps and f.answer == stored.get(f.reply_id)
    ]
    for problem in [
        f for f in followers if not isinstance(f, chatclient.ReplyFollower)
    ]:
        progress(f"  a chat failed: {problem!r}")
    for follower in done:
        if follower not in whole:
            progress(f"  reply {follower.reply_id}: {lost_how(follower, stored)}")
    if len(whole) < count:
        print_errors(stack)
    app_gaps = [gap for f in done for gap in update_gaps(f.arrivals)]
    direct = [gap for gaps in baseline for gap in gaps]
    return {
        "count": count,
        "whole": len(whole) == count,
        "lost": count - len(whole),
        "app": (percentile(app_gaps, 50), percentile(app_gaps, 99)),
        "direct": (percentile(direct, 50), percentile(direct, 99)),
        "rss_per_stream": max(0, peak_rss - idle_rss) / count,
        "rss_total": peak_rss,
    }


def update_gaps(arrivals):
    """Gaps between the moments new text reached the client.

    Events of one websocket message share their arrival time: a busy app
    sends several tokens at once, and the reader sees them appear together.
    """
    moments = sorted(set(arrivals))
    return [b - a for a, b in zip(moments, moments[1:])]


def print_errors(stack):
    """The errors the app's processes logged: why a reply may have lost text."""
    for name in [*stack.daphnes, *stack.workers]:
        for line in stack.log_of(name).splitlines():
            if " ERROR " in line or "Traceback" in line:
                progress(f"  {name}: {line[:300]}")


def lost_how(follower, stored):
    if follower.status != "stop":
        return f"ended {follower.status}"
    if follower.gaps:
        return f"events missing: {follower.gaps}"
    return (
        f"{len(follower.answer)} characters arrived, "
        f"{len(stored.get(follower.reply_id) or '')} stored"
    )


def stored_answers(stack, reply_ids):
    with psycopg.connect(f"{PG_URL}/{stack.database}") as db:
        rows = db.execute(
            "SELECT id, content FROM chat_message WHERE id = ANY(%s)", [reply_ids]
        ).fetchall()
    return dict(rows)


async def direct_gaps(simulator):
    """Gaps between the data lines of one reply read straight from the simulator."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": question("direct")}],
            "stream": True,
        }
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: {simulator.host}:{simulator.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(simulator.host, simulator.port)
    arrivals = []
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        while line := await reader.readline():
            if line.startswith(b"data: {") and b'"content":' in line:
                arrivals.append(time.monotonic())
    finally:
        writer.close()
    return [b - a for a, b in zip(arrivals, arrivals[1:])]


def percentile(values, percent):
    """Nearest-rank percentile: a value that was measured, never interpolated."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def added(app, direct):
    if app is None or direct is None:
        return "-"
    return f"{(app - direct) * 1000:+.1f}"


def print_report(results):
    print(
        f"Production layout on loopback: 2 Daphne, 2 Celery workers (threads), "
        f"PostgreSQL, Redis; simulator {TOKEN_DELAY * 1000:.0f} ms between "
        f"chunks, {WORDS} words a reply; {os.cpu_count()} CPUs"
    )
    print()
    header = (
        f"{'chats':>5}  {'gap p50':>8} {'direct':>7} {'added':>7}  "
        f"{'gap p99':>8} {'direct':>7} {'added':>7}  {'MB/stream':>9} "
        f"{'RSS MB':>7}  {'lost':>4}"
    )
    print(header)
    for row in results:
        (app50, app99), (direct50, direct99) = row["app"], row["direct"]
        print(
            f"{row['count']:>5}  {ms(app50):>8} {ms(direct50):>7} "
            f"{added(app50, direct50):>7}  {ms(app99):>8} {ms(direct99):>7} "
            f"{added(app99, direct99):>7}  {row['rss_per_stream'] / 2**20:>9.2f} "
            f"{row['rss_total'] / 2**20:>7.0f}  {row['lost']:>4}"
        )
    held = [row["count"] for row in results if row["whole"]]
    print()
    print(f"largest N held with no lost token: {max(held) if held else 'none'}")
    print(
        "(gap: ms between two moments new text of a reply reached the client; "
        "direct: between two chunks read straight from the simulator)"
    )


if __name__ == "__main__":
    main()
