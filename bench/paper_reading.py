"""What does reading a paper cost the app before any model is asked?

Sets the SciPy 1.0 paper (../shared/papers/scipy-1.0, its sections read
with the app's LaTeX reading) in a plain article with pdflatex, then
prints, for the resulting PDF:

- its size and pages, and the time pypdf extraction and heading detection
  take (academic.pdftext.pdf_sections, median of --runs);
- the sections found, and for each model profile default (R1-like, V3-like
  and the fallback) the part budget, the number of parts the map step
  sends and the largest part in estimated tokens, and the time cutting
  takes;
- the process's maximum resident set.

    .venv/bin/python bench/paper_reading.py
    .venv/bin/python bench/paper_reading.py --runs 9

No database, worker or model is involved: the model's share of the time
depends on the backend, and bench/polish.py measures how close to it batch
work through the admission queue gets.
"""

import argparse
import functools
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Run as a script from bench/, which puts bench/ and not the project on the path.
sys.path.insert(0, str(BASE_DIR))
SHARED_DIR = Path(os.environ.get("SHARED_DIR", BASE_DIR.parent / "shared"))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs (default 5)")
    return parser.parse_args()


def median_seconds(function, runs):
    timings = []
    result = None
    for _run in range(runs):
        started = time.perf_counter()
        result = function()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), result


def main():
    args = parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "assistant.settings")
    import django

    django.setup()

    from academic import pdftext, reading
    from assistant.models import FALLBACK_DEFAULTS, PROFILE_DEFAULTS, ModelProfile
    from chat.prompt import count_text_tokens
    from tests.academic.papers import build_scipy_pdf

    with tempfile.TemporaryDirectory() as directory:
        data = build_scipy_pdf(SHARED_DIR, Path(directory)).read_bytes()

    seconds, (_title, sections) = median_seconds(
        lambda: pdftext.pdf_sections(data), args.runs
    )
    pages = max(page for section in sections for page in section.pages)
    print(f"PDF: {len(data) / 1024:.0f} KiB, {pages} pages")
    print(f"extraction and headings: {seconds * 1000:.0f} ms (median of {args.runs})")
    print(f"sections: {len(sections)}")

    profiles = [
        ("R1-like", PROFILE_DEFAULTS[0][1]),
        ("V3-like", PROFILE_DEFAULTS[1][1]),
    ]
    profiles.append(("fallback", FALLBACK_DEFAULTS))
    for name, limits in profiles:
        profile = ModelProfile(name=name, **limits)
        budget = reading.part_budget(profile)
        cut = functools.partial(reading.cut_into_parts, sections, budget)
        seconds, parts = median_seconds(cut, args.runs)
        largest = max(
            sum(count_text_tokens(b["text"]) + reading.PASSAGE_OVERHEAD for b in blocks)
            for _index, blocks in parts
        )
        print(
            f"{name}: budget {budget} tokens, {len(parts)} parts, largest "
            f"{largest}, cutting {seconds * 1000:.1f} ms"
        )

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"max resident set: {peak_kib / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
