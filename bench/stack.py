"""The production layout on loopback: PostgreSQL, Redis, Daphnes and workers.

Used by the deployment test (tests/deployment) and bench/load.py. It
starts its own redis-server on a free port, makes a database of its own on
the PostgreSQL at 127.0.0.1:5432 (trust authentication, as CI's), migrates
it, and runs the app's processes exactly as docs/deploy.md's units do:
`daphne -b ... -p ... assistant.asgi:application` and
`celery -A assistant worker --pool threads -n NAME@%h`. The model server is
whatever base URL the caller gives, usually the bundled simulator. Every
process it started is stopped by stop(), also after a failure halfway.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from chatclient import free_port

BASE_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
PG_URL = os.environ.get("STACK_POSTGRES", "postgres://postgres@127.0.0.1:5432")
STARTUP_SECONDS = 60
STOP_SECONDS = 20

CREATE_USER = """
import os
from django.contrib.auth import get_user_model
users = get_user_model()
for name in os.environ["STACK_USERS"].split():
    user, _ = users.objects.get_or_create(username=name)
    user.set_password(os.environ["STACK_PASSWORD"])
    user.save()
"""


class StackError(Exception):
    """A process of the stack did not start or answer; the message says which."""


class Stack:
    def __init__(self, work_dir, database, model_api_url, *, settings=None):
        self.work_dir = Path(work_dir)
        self.database = database
        self.redis_port = free_port()
        self.env = self._environment(model_api_url, settings or {})
        self.redis = None
        self.daphnes = {}
        self.workers = {}
        self._logs = []

    @property
    def redis_url(self):
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _environment(self, model_api_url, settings):
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "REDIS_URL", "USING_SIMULATOR")
        }
        env.update(
            DATABASE_URL=f"{PG_URL}/{self.database}",
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            SECRET_KEY="loopback-stack-key-not-for-production",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            MODEL_API_BASE_URL=model_api_url,
            STATIC_ROOT=str(self.work_dir / "static"),
            DATA_DIR=str(self.work_dir / "data"),
            AUTO_TITLES="false",
            PYTHONUNBUFFERED="1",
        )
        env.update(settings)
        return env

    def start(self, daphnes=2, workers=2, worker_threads=16):
        self.start_redis()
        self.create_database()
        # Independent steps, side by side: together they are most of the
        # start-up time.
        collecting = self._spawn(
            "collectstatic",
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        )
        self.manage("migrate", "--noinput", "-v", "0")
        if collecting.wait(timeout=300) != 0:
            raise StackError("collectstatic failed; see collectstatic.log")
        for number in range(1, daphnes + 1):
            self.start_daphne(f"daphne{number}")
        for number in range(1, workers + 1):
            self.start_worker(f"worker{number}", worker_threads)
        for name in self.daphnes:
            self.wait_until_ready(name)
        for name in self.workers:
            self.wait_for_worker(name)

    def stop(self):
        processes = [*self.daphnes.values(), *self.workers.values()]
        if self.redis is not None:
            processes.append(self.redis)
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            _stop(process)
        for log in self._logs:
            log.close()
        self.drop_database()

    # PostgreSQL ---------------------------------------------------------

    def create_database(self):
        self.drop_database()
        self._psql(f'CREATE DATABASE "{self.database}"')

    def drop_database(self):
        self._psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def _psql(self, statement):
        subprocess.run(
            [
                "psql",
                f"{PG_URL}/postgres",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def manage(self, *args, env=None):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=env or self.env,
            check=True,
            capture_output=True,
            timeout=300,
        )

    def create_users(self, names, password):
        env = {**self.env, "STACK_USERS": " ".join(names), "STACK_PASSWORD": password}
        self.manage("shell", "-v", "0", "-c", CREATE_USER, env=env)

    # Redis --------------------------------------------------------------

    def start_redis(self):
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise StackError("redis-server is not installed")
        self.redis = self._spawn(
            "redis",
            [
                redis_server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work_dir),
            ],
        )
        self._wait_for(self._redis_answers, "redis-server")

    def restart_redis(self):
        _stop(self.redis)
        self.start_redis()

    def _redis_answers(self):
        import redis

        try:
            return redis.Redis(port=self.redis_port, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    # Daphne -------------------------------------------------------------

    def start_daphne(self, name, port=None):
        port = port or free_port()
        process = self._spawn(
            name,
            [
                str(BIN_DIR / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "assistant.asgi:application",
            ],
        )
        process.port = port
        self.daphnes[name] = process
        return process

    def restart_daphne(self, name):
        port = self.daphnes[name].port
        _stop(self.daphnes[name])
        self.start_daphne(name, port)
        self.wait_until_ready(name)

    def url(self, name):
        return f"http://127.0.0.1:{self.daphnes[name].port}"

    def readiness(self, name):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.url(name)}/readyz", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None

    def wait_until_ready(self, name):
        self._wait_for(lambda: self.readiness(name) == 200, name, self.daphnes[name])

    # Celery -------------------------------------------------------------

    def start_worker(self, name, threads=16):
        process = self._spawn(
            name,
            [
                str(BIN_DIR / "celery"),
                "-A",
                "assistant",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(threads),
                "--hostname",
                f"{name}@%h",
                "--loglevel",
                "INFO",
            ],
        )
        self.workers[name] = process
        return process

    def control(self):
        from celery import Celery

        return Celery(broker=self.redis_url)

    def wait_for_worker(self, name):
        self._wait_for(lambda: self._worker_answers(name), name, self.workers[name])

    def _worker_answers(self, name):
        import redis

        app = self.control()
        try:
            replies = app.control.ping(timeout=0.5)
        except (OSError, redis.RedisError):
            # Redis restarting: the worker is not reachable yet.
            return False
        finally:
            app.close()
        return any(host.startswith(f"{name}@") for reply in replies for host in reply)

    def worker_writing(self, message_id):
        """The name of the worker whose active task writes this reply."""
        for name, reply_ids in self._active_replies().items():
            if message_id in reply_ids:
                return name
        return None

    def workers_with_replies(self):
        """The names of the workers that hold a reply's task at this moment."""
        return {name for name, reply_ids in self._active_replies().items() if reply_ids}

    def _active_replies(self):
        """Worker name -> ids of the replies its active tasks write."""
        app = self.control()
        try:
            active = app.control.inspect(timeout=2).active() or {}
        finally:
            app.close()
        return {
            hostname.split("@", 1)[0]: [
                task["args"][0]
                for task in tasks
                if task["name"] == "chat.tasks.generate_reply"
            ]
            for hostname, tasks in active.items()
        }

    def rss_bytes(self):
        """Resident memory of the Daphne and Celery processes, summed."""
        total = 0
        for process in [*self.daphnes.values(), *self.workers.values()]:
            status = Path(f"/proc/{process.pid}/status")
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    # Processes ----------------------------------------------------------

    def _spawn(self, name, command):
        log = open(self.work_dir / f"{name}.log", "ab")
        self._logs.append(log)
        return subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_of(self, name):
        path = self.work_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_for(self, condition, name, process=None):
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(f"{name} exited with code {process.returncode}")
            if condition():
                return
            time.sleep(0.2)
        raise StackError(f"{name} did not answer within {STARTUP_SECONDS} s")


def _stop(process, sig=signal.SIGTERM):
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
