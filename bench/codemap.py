"""How long does the app take to read a code project and map it, before any
model request?

Zips real packages installed in this virtualenv (h11, pure Python; greenlet,
C++ with a little Python; pip's own sources, a larger Python project), and
for each prints the files read and left out, the modules and import edges
of the map, the parts the files are cut into at the default part ceiling,
and the median wall time of reading the zip (safety checks, filters,
decoding), building the map (ast, tree-sitter), cutting into parts and
drawing the diagram, over --rounds runs.

    .venv/bin/python bench/codemap.py
    .venv/bin/python bench/codemap.py --rounds 10
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Run as a script from bench/, which puts bench/ and not the project on the path.
sys.path.insert(0, str(BASE_DIR))

PROJECTS = ("h11", "greenlet", "pip")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args()


def median_ms(function, rounds):
    times = []
    result = None
    for _round in range(rounds):
        started = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - started) * 1000)
    return result, statistics.median(times)


def measure(name, rounds):
    from academic import code_actions, codebase, codediagram, codemap
    from tests.academic.codeprojects import package_zip

    data = package_zip(name, include=lambda path: "__pycache__" not in path)
    project, read_ms = median_ms(
        lambda: codebase.read_upload(f"{name}.zip", data), rounds
    )
    project_map, map_ms = median_ms(lambda: codemap.build_map(project.files), rounds)
    budget = code_actions.PART_TOKEN_CEILING
    parts, split_ms = median_ms(
        lambda: sum(
            len(code_actions.split_lines(f.text, budget)) for f in project.files
        ),
        rounds,
    )
    _svg, diagram_ms = median_ms(
        lambda: codediagram.render_svg(project_map, lambda path: path), rounds
    )
    return [
        name,
        f"{len(data) // 1024} KB",
        len(project.files),
        len(project.skipped),
        len(project_map["edges"]),
        parts,
        f"{read_ms:.0f}",
        f"{map_ms:.0f}",
        f"{split_ms:.0f}",
        f"{diagram_ms:.0f}",
    ]


def main():
    args = parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "assistant.settings")
    import django

    django.setup()

    header = ["project", "zip", "files", "left out", "edges", "parts"]
    header += ["read ms", "map ms", "split ms", "diagram ms"]
    rows = [header] + [measure(name, args.rounds) for name in PROJECTS]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
