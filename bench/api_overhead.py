"""What does the app's /v1 add to calling the model server directly?

In one run, the same openai client asks the model simulator directly and
through the app's /v1 (Daphne, key check, quotas, admission queue, relay,
metering), alternating one request each way:

1. first token: requests one at a time; the time from sending to the first
   chunk carrying reasoning or answer text, p50 and p90 of each route, their
   difference and ratio;
2. throughput: --concurrency streams at once, several rounds; completion
   tokens a second over the wall time of a round, each route, and the ratio.

    .venv/bin/python bench/api_overhead.py
    .venv/bin/python bench/api_overhead.py --rounds 40 --concurrency 16

The simulator runs inside this process. The app is started with
scripts/run.py, as `make run` starts it, on a free port with a temporary
DATA_DIR (the embedded default); a user, an API key without limits and a
model profile that admits --concurrency requests at once are made in its
database first, so the queue does not hold the streams back and what is
measured is the relay itself. --redis-url and --database-url run the app in
the production configuration, as for stream_latency.py.
"""

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
import stream_latency
from stream_latency import (
    BASE_DIR,
    SETUP_SECONDS,
    BenchError,
    app_environment,
    app_url,
    clean_up,
    print_log_tail,
    progress,
    start_app,
    wait_until_answering,
)

from assistant.simulator import SimulatorConfig, SimulatorServer

MODEL = "deepseek-r1"
QUESTION = [{"role": "user", "content": "How long does light take to cross a proton?"}]
# 4 characters every 5 ms after 50 ms: a reply of a few hundred chunks, long
# enough that relaying each chunk shows in the throughput.
SIMULATOR_CONFIG = SimulatorConfig(
    token_delay=0.005, first_token_delay=0.05, chunk_chars=4
)
DEFAULT_TIMEOUT_SECONDS = 900

MAKE_KEY = """
import os
from django.contrib.auth import get_user_model
from assistant.api.models import ApiKey
from assistant.models import ModelProfile

user, _ = get_user_model().objects.get_or_create(username="bench-api")
profile = ModelProfile.ensure(os.environ["BENCH_MODEL"])
profile.concurrency_limit = int(os.environ["BENCH_CONCURRENCY"])
profile.save(update_fields=["concurrency_limit"])
key = ApiKey(name="bench", user=user)
raw_key = key.new_secret()
key.save()
print(raw_key)
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_SECONDS)
    return parser.parse_args()


def main():
    args = parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, stream_latency._exit_on_signal)
    signal.alarm(args.timeout)

    work_dir = Path(tempfile.mkdtemp(prefix="bench-api-overhead-"))
    simulator = SimulatorServer(host="127.0.0.1", port=0, config=SIMULATOR_CONFIG)
    simulator.start()
    app = None
    try:
        env = app_environment(args, simulator, work_dir)
        app = start_app(env, work_dir / "app.log")
        wait_until_answering(f"{app_url(env)}/accounts/login/", app)
        raw_key = make_key(env, args.concurrency)
        first_tokens, throughput = asyncio.run(
            measure(args, simulator.url, f"{app_url(env)}/v1", raw_key)
        )
        print_report(args, first_tokens, throughput)
    except BenchError as error:
        print_log_tail(work_dir / "app.log")
        sys.exit(f"api_overhead: {error}")
    finally:
        clean_up(args, app, simulator, work_dir)


def make_key(env, concurrency):
    key_env = {**env, "BENCH_MODEL": MODEL, "BENCH_CONCURRENCY": str(concurrency)}
    try:
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-v", "0", "-c", MAKE_KEY],
            cwd=BASE_DIR,
            env=key_env,
            check=True,
            capture_output=True,
            timeout=SETUP_SECONDS,
        )
    except subprocess.CalledProcessError as error:
        raise BenchError(f"could not make a key: {error.stderr.decode()}") from None
    return done.stdout.decode().split()[-1]


async def measure(args, direct_url, app_url_v1, raw_key):
    # The clients pool connections on the loop they first run on: one loop.
    routes = {
        "direct": openai.AsyncOpenAI(base_url=direct_url, api_key="x", max_retries=0),
        "app": openai.AsyncOpenAI(base_url=app_url_v1, api_key=raw_key, max_retries=0),
    }
    first_tokens = await measure_first_tokens(routes, args.rounds)
    throughput = await measure_throughput(
        routes, args.concurrency, args.throughput_rounds
    )
    return first_tokens, throughput


async def one_stream(client):
    """(seconds to the first text, completion tokens) of one streamed reply."""
    started = time.perf_counter()
    first_text_at = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if first_text_at is None and chunk.choices and _has_text(chunk.choices[0]):
            first_text_at = time.perf_counter()
    if first_text_at is None:
        raise BenchError("a reply ended without any text")
    return first_text_at - started, tokens


def _has_text(choice):
    delta = choice.delta
    extra = delta.model_extra or {}
    return bool(delta.content or extra.get("reasoning_content"))


async def measure_first_tokens(routes, rounds):
    progress(f"first token: {rounds} requests each way, one at a time ...")
    times = {name: [] for name in routes}
    # One warm-up each way: connections, the model list, the profile.
    for client in routes.values():
        await one_stream(client)
    for _round in range(rounds):
        for name, client in routes.items():
            seconds, _tokens = await one_stream(client)
            times[name].append(seconds * 1000)
    return times


async def measure_throughput(routes, concurrency, rounds):
    progress(f"throughput: {rounds} rounds of {concurrency} streams each way ...")
    rates = {name: [] for name in routes}
    for _round in range(rounds):
        for name, client in routes.items():
            started = time.perf_counter()
            results = await asyncio.gather(
                *(one_stream(client) for _ in range(concurrency))
            )
            wall = time.perf_counter() - started
            rates[name].append(sum(tokens for _s, tokens in results) / wall)
    return rates


def percentile(values, percent):
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))
    return ordered[index]


def print_report(args, first_tokens, throughput):
    configuration = "PostgreSQL + Redis" if args.redis_url else "embedded default"
    print(f"\nAPI overhead ({configuration}, model {MODEL})\n")
    print("first token, ms       p50      p90")
    for name, values in first_tokens.items():
        p50, p90 = percentile(values, 50), percentile(values, 90)
        print(f"  {name:<16} {p50:8.1f} {p90:8.1f}")
    direct, app = first_tokens["direct"], first_tokens["app"]
    added = percentile(app, 50) - percentile(direct, 50)
    print(f"  added (p50)      {added:8.1f}")
    print(f"  ratio (p50)      {percentile(app, 50) / percentile(direct, 50):8.2f}")

    print(f"\nthroughput, {args.concurrency} streams at once, completion tokens/s")
    for name, values in throughput.items():
        print(f"  {name:<16} {statistics.mean(values):8.0f}")
    ratio = statistics.mean(throughput["app"]) / statistics.mean(throughput["direct"])
    print(f"  ratio            {ratio:8.2f}")


if __name__ == "__main__":
    main()
