"""How well, how fast and in how much memory are formulas and tables read?

Runs an evaluation set of images with their LaTeX (by default
../shared/img2latex-eval/ beside the project; any folder with the same
ground_truth.jsonl format works) through each available engine and prints,
per subset, the set's own scorer's figures (its score.py, loaded by path),
seconds per image and peak memory.

    .venv/bin/python bench/img2latex.py
    .venv/bin/python bench/img2latex.py --set path/to/set --limit 10
    MODEL_API_BASE_URL=http://gpu01:8000/v1 .venv/bin/python bench/img2latex.py \\
        --model Qwen2.5-VL-7B-Instruct

Engines:

    vision      the vision model behind the OpenAI-compatible API, on the
                normalised image (academic.imaging), as the app sends it
    vision-raw  the same model on the image as uploaded (only re-encoded as
                PNG): the baseline that shows what normalising does
    offline     the offline formula engine (academic.ocr_engine) on the
                normalised image, with the app's bounds (400 characters,
                15 s), formulas only; run when requirements-ocr.txt is
                installed, else listed as not installed
    offline-raw the same engine on the image as uploaded

Without MODEL_API_BASE_URL (or --base-url) the bundled simulator answers,
inside this process. It does not read images: it returns the same plausible
formula or table for every picture, so its scores are a floor that shows the
scoring and timing work, not a measure of any model. The offline engine
reads the images for real either way.

Each image is read by academic.img2tex.transcribe, the call the Celery task
makes, without the task's admission queue and database row. Seconds per
image count normalising plus the request. "load" is the time to reach the
API and list its models. Peak memory is the largest Python heap of one
image's work (tracemalloc, which does not see torch's own buffers), and
the process's peak resident size, which does, also right after loading the
offline network.
Predictions are written to bench/out/img2latex-<engine>.jsonl, which the
set's score.py also takes on its command line.
"""

import argparse
import importlib.util
import io
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Run as a script from bench/, which puts bench/ and not the project on the path.
sys.path.insert(0, str(BASE_DIR))
DEFAULT_SET = BASE_DIR.parent / "shared" / "img2latex-eval"
OUT_DIR = BASE_DIR / "bench" / "out"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, dest="eval_set")
    parser.add_argument("--base-url", default=os.environ.get("MODEL_API_BASE_URL"))
    parser.add_argument("--model", help="default: the first vision model listed")
    parser.add_argument(
        "--table-target", choices=["latex", "markdown", "html"], default="latex"
    )
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument(
        "--engines",
        default="vision,vision-raw,offline",
        help="comma-separated engines",
    )
    return parser.parse_args()


def load_scorer(eval_set):
    spec = importlib.util.spec_from_file_location("eval_score", eval_set / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_ground_truth(eval_set, limit):
    with open(eval_set / "ground_truth.jsonl", encoding="utf-8") as rows:
        truth = [json.loads(line) for line in rows if line.strip()]
    return truth[:limit] if limit else truth


def start_simulator():
    from assistant.simulator.server import SimulatorConfig, SimulatorServer

    config = SimulatorConfig(token_delay=0.0, first_token_delay=0.0, chunk_chars=8)
    return SimulatorServer(host="127.0.0.1", port=0, config=config).start()


def setup_django(base_url):
    os.environ["MODEL_API_BASE_URL"] = base_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "assistant.settings")
    # A database of its own: the app looks up each model's backend there.
    os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="bench-img2latex-"))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def pick_model(requested):
    """The model to ask, and the seconds it took to reach the API."""
    from assistant.modelapi import list_models
    from assistant.models import ModelProfile

    started = time.perf_counter()
    names = [model["id"] for model in list_models()]
    load_seconds = time.perf_counter() - started
    if requested:
        return requested, load_seconds

    for name in names:
        if ModelProfile.defaults_for(name)["supports_vision"]:
            return name, load_seconds
    sys.exit(f"none of the served models looks vision-capable: {names}; use --model")


def as_uploaded_png(data):
    """The image as uploaded, only re-encoded as PNG (the data URI's format)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def read_one(engine, data, row, model, table_target):
    from academic import imaging, img2tex, ocr_engine

    if engine in ("vision", "offline"):
        png = imaging.normalise(data).png
    else:
        png = as_uploaded_png(data)

    if engine.startswith("offline"):
        if row["kind"] != "formula":
            return None
        reading = ocr_engine.read_formula(png)
        return reading.source
    target = table_target if row["kind"] == "table" else "latex"
    return img2tex.transcribe(png, model, row["kind"], target).source


def load_offline_engine():
    """Seconds to load the offline network, or None when it is not installed."""
    from academic import ocr_engine

    if not ocr_engine.is_available():
        return None
    started = time.perf_counter()
    ocr_engine.load()
    return time.perf_counter() - started


def run_engine(engine, truth, eval_set, model, table_target):
    """Predictions with per-image seconds and heap peaks."""
    from academic import imaging, img2tex

    results = []
    for row in truth:
        data = (eval_set / row["file"]).read_bytes()
        tracemalloc.start()
        started = time.perf_counter()
        try:
            prediction = read_one(engine, data, row, model, table_target)
            error = ""
            if prediction is None:
                # Tables are not offered to the offline engine.
                tracemalloc.stop()
                continue
        except imaging.ImageRefused as refusal:
            prediction, error = "", f"refused:{refusal.code}"
        except img2tex.ConversionFailed as failure:
            prediction, error = "", f"failed:{failure.code}"
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results.append(
            {
                "file": row["file"],
                "pred": prediction,
                "error": error,
                "seconds": seconds,
                "peak": peak,
            }
        )
    return results


def write_predictions(engine, results):
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"img2latex-{engine}.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for result in results:
            line = {"file": result["file"], "pred": result["pred"]}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def subset_rows(engine, truth, results, scorer):
    by_file = {row["file"]: row for row in truth}
    groups = {}
    for result in results:
        row = by_file[result["file"]]
        score = (
            scorer.formula_scores if row["kind"] == "formula" else scorer.table_scores
        )(result["pred"], row["latex"])
        key = f"{row['kind']}/{row['subset']}"
        groups.setdefault(key, []).append((score, result))

    for key in sorted(groups):
        yield engine, key, groups[key]


def format_row(engine, key, entries):
    scores = [score for score, _ in entries]
    results = [result for _, result in entries]
    count = len(entries)

    def mean(name):
        return sum(score[name] for score in scores) / count

    cell_acc = f"{mean('cell_acc'):.3f}" if "cell_acc" in scores[0] else "-"
    errors = sum(1 for result in results if result["error"])
    seconds = sum(result["seconds"] for result in results) / count
    peak_mb = max(result["peak"] for result in results) / 2**20
    return (
        f"{engine:10s} {key:28s} {count:3d} {mean('exact'):6.3f} "
        f"{mean('ned_char'):8.3f} {cell_acc:>8s} {errors:4d} {seconds:8.3f} "
        f"{peak_mb:8.1f}"
    )


def main():
    args = parse_args()
    scorer = load_scorer(args.eval_set)
    truth = read_ground_truth(args.eval_set, args.limit)

    simulator = None
    base_url = args.base_url
    if not base_url:
        simulator = start_simulator()
        base_url = simulator.url
    try:
        setup_django(base_url)
        model, load_seconds = pick_model(args.model)
        print(f"set: {args.eval_set} ({len(truth)} images)")
        print(f"api: {base_url}{' (simulator)' if simulator else ''}")
        print(f"model: {model}, load (list models): {load_seconds:.3f} s")
        engines = args.engines.split(",")
        offline_load = None
        if any(engine.startswith("offline") for engine in engines):
            offline_load = load_offline_engine()
            if offline_load is None:
                print("offline engine: not installed (requirements-ocr.txt), not run")
                engines = [e for e in engines if not e.startswith("offline")]
            else:
                rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(
                    f"offline engine: load (network, once): {offline_load:.3f} s, "
                    f"peak resident size after loading: {rss_mb:.0f} MB"
                )
        print()
        print(
            f"{'engine':10s} {'subset':28s} {'n':>3s} {'exact':>6s} "
            f"{'ned_char':>8s} {'cell_acc':>8s} {'err':>4s} {'s/image':>8s} "
            f"{'peak MB':>8s}"
        )
        for engine in engines:
            results = run_engine(engine, truth, args.eval_set, model, args.table_target)
            if not results:
                continue
            for row in subset_rows(engine, truth, results, scorer):
                print(format_row(*row))
            total = sum(result["seconds"] for result in results)
            path = write_predictions(engine, results)
            print(
                f"{engine:10s} {'all':28s} {len(results):3d} "
                f"{total / len(results):.3f} s/image; predictions: "
                f"{path.relative_to(BASE_DIR)}"
            )
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak resident size of the process: {rss_mb:.0f} MB")
    finally:
        if simulator is not None:
            simulator.stop()


if __name__ == "__main__":
    main()
