"""Start the research assistant: `make run` calls this.

Embedded default (no DATABASE_URL, no REDIS_URL): one Daphne process with
the Celery worker inside it, on SQLite. With REDIS_URL set, Daphne and a
Celery worker run as separate processes. Without MODEL_API_BASE_URL the
bundled model simulator is started first and the app is pointed at it.
Every child is stopped when this script is interrupted or when any of them
exits.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN_DIR = Path(PYTHON).parent


def env_port(name, default):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        sys.exit(f"{name} must be a TCP port number (1-65535), got {raw!r}")
    return int(raw)


def env_nice(name, default):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 19:
        sys.exit(f"{name} must be a niceness from 0 to 19, got {raw!r}")
    return int(raw)


def manage(*args, env):
    subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)


def wait_until_answering(url, process, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the model simulator exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"the model simulator did not answer at {url} within {seconds} s")


def start_simulator(env, host, port):
    process = subprocess.Popen(
        [PYTHON, "manage.py", "simulate_model", "--host", host, "--port", str(port)],
        cwd=BASE_DIR,
        env=env,
    )
    base_url = f"http://{host}:{port}/v1"
    wait_until_answering(f"{base_url}/models", process)
    print(f"Model simulator at {base_url} (set MODEL_API_BASE_URL to use a real API)")
    return process, base_url


def main():
    env = dict(os.environ)
    Path(env.get("DATA_DIR", BASE_DIR / "var")).mkdir(parents=True, exist_ok=True)
    host = env.get("HOST", "127.0.0.1")
    port = env_port("PORT", 8000)
    children = []

    if not env.get("MODEL_API_BASE_URL"):
        simulator_port = env_port("SIMULATOR_PORT", port + 1)
        simulator, base_url = start_simulator(env, "127.0.0.1", simulator_port)
        children.append(simulator)
        env["MODEL_API_BASE_URL"] = base_url
        env["USING_SIMULATOR"] = "1"

    try:
        manage("migrate", "--noinput", "-v", "0", env=env)
        manage("collectstatic", "--noinput", "-v", "0", env=env)
        manage("prepare", env=env)
        children.extend(start_servers(env, host, port))
        print(f"The research assistant is at http://{host}:{port}/  (Ctrl+C stops it)")
        wait_for_exit(children)
    finally:
        stop(children)


def start_servers(env, host, port):
    daphne = subprocess.Popen(
        [
            str(BIN_DIR / "daphne"),
            "-b",
            host,
            "-p",
            str(port),
            "assistant.asgi:application",
        ],
        cwd=BASE_DIR,
        env=env,
    )
    if not env.get("REDIS_URL"):
        return [daphne]

    # The worker runs a little below Daphne's CPU priority: Daphne's work is
    # what people wait on at each action, while a burst of replies starting
    # at once (each reading its conversation and counting its prompt) only
    # prepares them to wait in the model's queue. On a host with CPU to
    # spare it makes no difference.
    worker_nice = env_nice("WORKER_NICE", 10)
    worker = subprocess.Popen(
        [
            str(BIN_DIR / "celery"),
            "-A",
            "assistant",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            env.get("CELERY_CONCURRENCY", "64"),
            "--loglevel",
            "INFO",
        ],
        cwd=BASE_DIR,
        env=env,
        preexec_fn=lambda: os.nice(worker_nice),
    )
    return [daphne, worker]


def wait_for_exit(children):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
    stopped = [child for child in children if child.poll() is not None]
    sys.exit(f"{stopped[0].args[0]} exited with code {stopped[0].returncode}")


def stop(children):
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    main()
