"""How close to the backend's limit does a whole paper get polished?

Polishes ../shared/papers/scipy-1.0 as a LaTeX project (zipped, its main
file found and its inputs followed, as an upload would be) in one job
through the model simulator, paced at a set
rate per stream with a set number of streams admitted at once, and prints:

- wall time, from the first job created to the last chunk finished;
- the floor: the output tokens the simulator sent, divided by the backend's
  throughput (streams times tokens per second per stream), which no
  scheduling can beat; once at the nominal rate and once at the rate one
  stream measured alone gets (the simulator's pacing runs below nominal);
- the app's own time reading the project, masking and chunking, in the
  checks and in the word diff of the review, each summed over all calls;
- peak memory: the process's maximum resident set, which includes the
  simulator running in-process, and with --heap the Python heap's peak
  (tracemalloc, which slows the app's own work several times over).

    .venv/bin/python bench/polish.py
    .venv/bin/python bench/polish.py --streams 8 --rate 100 --model deepseek-r1

It runs the embedded default in this process: a temporary SQLite database,
the in-memory broker and the embedded Celery worker, so every chunk goes
through the same task, admission and stream reading as in the app.
"""

import argparse
import functools
import io
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
import zipfile
from collections import defaultdict
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Run as a script from bench/, which puts bench/ and not the project on the path.
sys.path.insert(0, str(BASE_DIR))

PAPER_DIR = BASE_DIR.parent / "shared" / "papers" / "scipy-1.0"
CHARS_PER_TOKEN = 4


class Timings:
    """Seconds spent in wrapped functions, summed per label, thread-safe."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self._lock = threading.Lock()

    def wrap(self, module, name, label):
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[label] += time.perf_counter() - started
                    self.calls[label] += 1

        setattr(module, name, timed)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4, help="admitted at once")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="tokens per second per stream"
    )
    parser.add_argument("--model", default="deepseek-v3")
    parser.add_argument("--papers", type=Path, default=PAPER_DIR)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--heap",
        action="store_true",
        help="also trace the Python heap's peak (slows the app's own work)",
    )
    return parser.parse_args()


def main():
    args = parse_args()
    data_dir = tempfile.mkdtemp(prefix="bench-polish-")

    from assistant.simulator.server import SimulatorConfig, SimulatorServer

    simulator = SimulatorServer(
        host="127.0.0.1",
        port=0,
        config=SimulatorConfig(
            token_delay=1.0 / args.rate,
            first_token_delay=0.05,
            chunk_chars=CHARS_PER_TOKEN,
            keepalive=5.0,
        ),
    )
    simulator.start()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="assistant.settings",
        DATA_DIR=data_dir,
        MODEL_API_BASE_URL=simulator.url,
        LOG_LEVEL="WARNING",
    )
    try:
        run(args, simulator)
    finally:
        simulator.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def measure_stream_rate(simulator, model, words=800):
    """Tokens per second one stream really gets from the simulator.

    Its pacing sleeps between chunks and polls the socket, so it runs below
    the nominal rate; the floor is given at both rates.
    """
    import openai

    client = openai.OpenAI(base_url=simulator.url, api_key="bench")
    text = "<text>\n" + "word " * words + "\n</text>"
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], stream=True
    )
    tokens = sum(1 for _chunk in stream)
    return tokens / (time.monotonic() - started)


def run(args, simulator):
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    stream_rate = measure_stream_rate(simulator, args.model)
    simulator.reset_stats()
    timings = instrument()

    from django.contrib.auth import get_user_model

    from academic.models import PolishChunk
    from assistant.embedded import start_embedded_worker, stop_embedded_worker
    from assistant.models import ModelProfile

    profile = ModelProfile.ensure(args.model)
    profile.concurrency_limit = args.streams
    profile.save(update_fields=["concurrency_limit"])
    owner = get_user_model().objects.create_user("bench")
    start_embedded_worker()

    archive = zip_folder(args.papers)
    if args.heap:
        tracemalloc.start()
    started = time.monotonic()
    job = start_project_job(owner, archive, args.model)
    chunks = PolishChunk.objects.filter(job=job)
    deadline = started + args.timeout
    while chunks.exclude(status__in=PolishChunk.FINISHED_STATUSES).exists():
        if time.monotonic() > deadline:
            sys.exit(f"not finished within {args.timeout} s")
        time.sleep(0.05)
    wall = time.monotonic() - started
    compile_seconds = wait_for_compile_check(job, deadline)

    for chunk in job.chunks.all():
        chunk.changes()
    heap_peak = None
    if args.heap:
        _heap, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    stop_embedded_worker()
    timings.seconds["compile check"] = compile_seconds
    timings.calls["compile check"] = 1
    report(args, simulator, chunks, wall, timings, heap_peak, stream_rate)


def wait_for_compile_check(job, deadline):
    """Seconds from the last chunk to the end of the compile check."""
    started = time.monotonic()
    while True:
        job.refresh_from_db(fields=["compile_status"])
        if not job.is_checking:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            sys.exit("the compile check did not finish in time")
        time.sleep(0.05)


def zip_folder(folder):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def start_project_job(owner, archive, model):
    """The job an upload of `archive` starts, as the form starts it."""
    from academic import actions, project
    from academic.models import PolishJob

    latex_project = project.read_project(archive)
    documents = [
        actions.Document(path, latex_project.decoded[path], PolishJob.SourceKind.LATEX)
        for path in latex_project.edit_order
    ]
    fields = {
        "task": PolishJob.Task.POLISH,
        "preset": PolishJob.Preset.JOURNAL,
        "glossary": "",
        "model": model,
        "file_name": "scipy-1.0.zip",
    }
    return actions.start_job(
        owner,
        documents,
        fields,
        archive=archive,
        not_processed=latex_project.not_processed,
    )


def job_compile_status(chunks):
    job = chunks.first().job
    return job.compile_status or "not run"


def instrument():
    """Time the app's own work: masking and chunking, checks, the diff."""
    from academic import actions, diffing, generation, project

    timings = Timings()
    timings.wrap(project, "read_project", "project")
    timings.wrap(actions, "mask_document", "mask")
    timings.wrap(actions, "split_into_chunks", "chunk")
    timings.wrap(generation.checks, "check_chunk", "checks")
    timings.wrap(diffing, "diff_changes", "diff")
    return timings


def report(args, simulator, chunks, wall, timings, heap_peak, stream_rate):
    stats = simulator.stats
    counted = chunks.exclude(completion_tokens=None)
    tokens = sum(counted.values_list("completion_tokens", flat=True))
    throughput = args.streams * args.rate
    floor = tokens / throughput
    measured_floor = tokens / (args.streams * stream_rate)
    kept = chunks.filter(status="kept").count()
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    files = chunks.values("file").distinct().count()
    print(f"papers: {args.papers.name}, {files} files edited, model {args.model}")
    print(
        f"backend: {args.streams} streams x {args.rate:g} tokens/s = "
        f"{throughput:g} tokens/s; simulator saw at most {stats['max_active']} at once"
    )
    print(f"one stream measured alone: {stream_rate:.0f} tokens/s")
    print(
        f"chunks: {chunks.count()} ({kept} kept as original), "
        f"requests: {stats['requests']}, output tokens: {tokens}"
    )
    print()
    print(f"{'measure':<28}{'seconds':>10}")
    print(f"{'wall time':<28}{wall:>10.2f}")
    print(f"{'floor (tokens/throughput)':<28}{floor:>10.2f}")
    print(f"{'wall / floor':<28}{wall / floor if floor else float('nan'):>10.2f}")
    print(f"{'floor at measured rate':<28}{measured_floor:>10.2f}")
    print(f"{'wall / that floor':<28}{wall / measured_floor:>10.2f}")
    for label in ("project", "mask", "chunk", "checks", "diff", "compile check"):
        seconds = timings.seconds[label]
        calls = timings.calls[label]
        print(f"{'app: ' + label + f' ({calls} calls)':<28}{seconds:>10.3f}")
    print(f"compile check: {job_compile_status(chunks)}")
    print()
    if heap_peak is not None:
        print(f"peak Python heap: {heap_peak / 2**20:.1f} MiB (timings inflated)")
    print(f"max resident set: {max_rss_mb:.1f} MiB (simulator included)")


if __name__ == "__main__":
    main()
