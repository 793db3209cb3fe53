"""The production layout on loopback, driven by real clients.

Two Daphne processes and two Celery workers on one PostgreSQL database and
one redis-server of this module's own (bench/stack.py), with the bundled
simulator as the model server. Leases and heartbeats are short here so
that a killed worker's reply and slot come back within seconds. The stack
does not use the DATABASE_URL or REDIS_URL of the test run, so the module
runs the same in both configurations.
"""

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from assistant.simulator.server import SimulatorConfig, SimulatorServer

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH_DIR))

import chatclient  # noqa: E402
from stack import PG_URL, Stack  # noqa: E402

MODEL = "deepseek-v3"
PASSWORD = "loopback-password-42"
# About 6 s of reply: time to drop sockets and kill workers in the
# middle of it.
SLOW_QUESTION = "Explain the Doppler effect. [[sim delay=0.04 words=100]]"
SHORT_QUESTION = "What is a photon? [[sim delay=0.01 words=5]]"
# About a second of reply: long enough for many to queue behind two slots.
MEDIUM_QUESTION = "What is a laser? [[sim delay=0.02 words=25]]"
# More than one worker takes at once: eight threads and eight reserved.
QUESTIONS_AT_ONCE = 20
LEASE_SECONDS = 3
HEARTBEAT_SECONDS = 3


def run_coroutine(coroutine):
    """asyncio.run in a thread of its own.

    Earlier tests of the session (Playwright's sync API) may leave an event
    loop running in the main thread, where asyncio.run refuses to start.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _postgres_reachable():
    ready = subprocess.run(
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False
    )
    return ready.returncode == 0


pytestmark = [
    pytest.mark.skipif(
        shutil.which("redis-server") is None, reason="redis-server is not installed"
    ),
    pytest.mark.skipif(
        shutil.which("pg_isready") is None or not _postgres_reachable(),
        reason="no PostgreSQL at 127.0.0.1:5432",
    ),
]


@pytest.fixture(scope="module")
def simulator():
    server = SimulatorServer(
        host="127.0.0.1",
        port=0,
        config=SimulatorConfig(token_delay=0.05, first_token_delay=0.1, chunk_chars=4),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(simulator):
    work_dir = Path(tempfile.mkdtemp(prefix="assistant-stack-"))
    database = f"assistant_deploy_test_{os.getpid()}"
    deployment = Stack(
        work_dir,
        database,
        simulator.url,
        settings={
            "ADMISSION_LEASE_SECONDS": str(LEASE_SECONDS),
            "REPLY_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "STREAM_SAVE_INTERVAL": "0.5",
        },
    )
    try:
        deployment.start(daphnes=2, workers=2, worker_threads=8)
        deployment.create_users(["alice"], PASSWORD)
        yield deployment
    finally:
        deployment.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cookie(stack):
    return chatclient.log_in(stack.url("daphne1"), "alice", PASSWORD)


def stored_reply(stack, reply_id):
    with psycopg.connect(f"{PG_URL}/{stack.database}") as db:
        return db.execute(
            "SELECT status, content FROM chat_message WHERE id = %s", [reply_id]
        ).fetchone()


def conversation_count(stack):
    with psycopg.connect(f"{PG_URL}/{stack.database}") as db:
        return db.execute("SELECT count(*) FROM chat_conversation").fetchone()[0]


def has_text(follower):
    return len(follower.answer) > 40


async def ask_and_read_some(url, cookie, question=SLOW_QUESTION):
    async with chatclient.open_socket(url, cookie) as ws:
        follower = await chatclient.ask(ws, question, MODEL)
        await chatclient.follow_for(ws, follower, 30, until=has_text)
    return follower


async def ask_to_the_end(url, cookie, question=SHORT_QUESTION, seconds=30):
    async with chatclient.open_socket(url, cookie) as ws:
        follower = await chatclient.ask(ws, question, MODEL)
        return await chatclient.follow_for(ws, follower, seconds)


async def watch_to_the_end(url, cookie, follower, seconds=60):
    async with chatclient.open_socket(url, cookie) as ws:
        await chatclient.watch(ws, follower)
        return await chatclient.follow_for(ws, follower, seconds)


def wait_for_worker_of(stack, reply_id, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        name = stack.worker_writing(reply_id)
        if name is not None:
            return name
    pytest.fail(f"no worker reports reply {reply_id} as active")


def test_it_is_ready_on_both_daphnes(stack):
    assert stack.readiness("daphne1") == 200
    assert stack.readiness("daphne2") == 200


def test_it_continues_a_reply_through_the_other_daphne(stack, cookie):
    follower = run_coroutine(ask_and_read_some(stack.url("daphne1"), cookie))
    assert follower.status is None, "the reply ended before the socket dropped"

    run_coroutine(watch_to_the_end(stack.url("daphne2"), cookie, follower))

    status, content = stored_reply(stack, follower.reply_id)
    assert follower.status == status == "stop"
    assert follower.gaps == []
    assert follower.answer == content
    assert len(content) > 400


def test_it_ends_a_reply_whose_worker_is_killed_as_interrupted(stack, cookie):
    async def scenario():
        async with chatclient.open_socket(stack.url("daphne1"), cookie) as ws:
            follower = await chatclient.ask(ws, SLOW_QUESTION, MODEL)
            await chatclient.follow_for(ws, follower, 30, until=has_text)
            worker = wait_for_worker_of(stack, follower.reply_id)
            stack.workers[worker].kill()
            # The sweep of the surviving worker finds the stale heartbeat.
            await chatclient.follow_for(ws, follower, 6 * HEARTBEAT_SECONDS)
            return follower, worker

    follower, worker = run_coroutine(scenario())

    status, content = stored_reply(stack, follower.reply_id)
    assert follower.status == status == "incomplete"
    # Everything the page was shown is kept, and what the worker had logged
    # but not yet sent as well; the end event brings the page the whole.
    assert len(follower.answer) > 40
    assert content.startswith(follower.answer)
    # Its replacement starts, as systemd's Restart=always would start it.
    stack.start_worker(worker, threads=8)


def test_a_killed_workers_slot_is_released(stack, cookie):
    # With one slot per model, the next reply runs only once the dead
    # worker's lease has expired.
    set_concurrency_limit(stack, 1)
    try:
        follower = run_coroutine(
            ask_to_the_end(stack.url("daphne2"), cookie, seconds=4 * LEASE_SECONDS)
        )
        assert follower.status == "stop"
    finally:
        set_concurrency_limit(stack, 4)


def test_both_workers_together_keep_to_the_models_limit(stack, cookie, simulator):
    """Twenty questions at once through both Daphnes: more than one worker
    takes (eight threads, eight more reserved), so both write replies, and
    the model never has more than its two slots' worth at once."""
    # The profile exists once the model has been asked.
    run_coroutine(ask_to_the_end(stack.url("daphne1"), cookie))
    set_concurrency_limit(stack, 2)
    simulator.reset_stats()
    seen_writing = set()

    async def one_question(daphne):
        async with chatclient.open_socket(stack.url(daphne), cookie) as ws:
            follower = await chatclient.ask(ws, MEDIUM_QUESTION, MODEL)
            return await chatclient.follow_for(ws, follower, 120)

    async def scenario():
        questions = asyncio.gather(
            *(one_question(f"daphne{1 + n % 2}") for n in range(QUESTIONS_AT_ONCE))
        )
        # Which workers hold the replies' tasks, written or waiting for a
        # slot, while they run.
        while not questions.done():
            seen_writing.update(await asyncio.to_thread(stack.workers_with_replies))
            await asyncio.sleep(0.5)
        return await questions

    try:
        followers = run_coroutine(scenario())
    finally:
        set_concurrency_limit(stack, 4)

    assert [f.status for f in followers] == ["stop"] * QUESTIONS_AT_ONCE
    assert all(f.gaps == [] and len(f.answer) > 50 for f in followers)
    assert seen_writing == set(stack.workers)
    assert simulator.stats["max_active"] == 2


def set_concurrency_limit(stack, limit):
    with psycopg.connect(f"{PG_URL}/{stack.database}") as db:
        db.execute(
            "UPDATE assistant_modelprofile SET concurrency_limit = %s WHERE name = %s",
            [limit, MODEL],
        )


def test_a_worker_told_to_stop_finishes_its_reply(stack, cookie):
    async def scenario():
        async with chatclient.open_socket(stack.url("daphne1"), cookie) as ws:
            follower = await chatclient.ask(
                ws, "Explain refraction. [[sim delay=0.04 words=50]]", MODEL
            )
            await chatclient.follow_for(ws, follower, 30, until=has_text)
            worker = wait_for_worker_of(stack, follower.reply_id)
            stopping = stack.workers[worker]
            stopping.terminate()
            # Its replacement starts meanwhile, as systemd's restart would.
            stack.start_worker(worker, threads=8)
            await chatclient.follow_for(ws, follower, 60)
            return follower, stopping

    follower, stopping = run_coroutine(scenario())

    status, content = stored_reply(stack, follower.reply_id)
    assert follower.status == status == "stop"
    assert follower.answer == content
    assert stopping.wait(timeout=20) == 0


def test_restarting_redis_and_a_daphne_loses_no_conversation(stack, cookie):
    before = conversation_count(stack)

    stack.restart_redis()
    stack.restart_daphne("daphne1")
    for name in stack.workers:
        stack.wait_for_worker(name)

    assert conversation_count(stack) == before
    # The restarted Daphne and the one that only lost its Redis both work.
    for name in ("daphne1", "daphne2"):
        follower = run_coroutine(ask_to_the_end(stack.url(name), cookie))
        assert follower.status == "stop"
    assert conversation_count(stack) == before + 2
