"""Whether a polished LaTeX document still compiles, when TeX is installed.

The original and the model's result are compiled the same way, each in a
fresh temporary folder with the project's other files beside it, and only
errors the original does not have count against the result: a paper that
needs a class or a figure missing here fails both ways, and that says
nothing about the polishing. xelatex is used for documents that need it
(ctex, xeCJK, fontspec), pdflatex otherwise. Shell escape stays off, and
each run has a time limit; TeX may read and write only inside the
document's folder.
"""

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

XELATEX_HINTS = re.compile(
    r"\\documentclass\s*(?:\[[^\]]*\])?\s*\{ctex"
    r"|\\usepackage\s*(?:\[[^\]]*\])?\s*\{[^}]*\b(?:ctex|xeCJK|fontspec)\b"
)
DOCUMENTCLASS = re.compile(r"\\documentclass\b")
COMPILE_SECONDS = 120
# An error in a TeX log starts with "! " and its line number follows in a
# line starting with "l.<number>".
ERROR_LINE = re.compile(r"^! .*")
MAX_ERRORS = 20

OK = "ok"
BROKEN = "broken"
ORIGINAL_FAILS = "original_fails"
SKIPPED = "skipped"
NOT_A_DOCUMENT = "not_a_document"


@dataclass(frozen=True)
class CompileRun:
    succeeded: bool
    errors: list = field(default_factory=list)


@dataclass(frozen=True)
class CompileOutcome:
    status: str
    engine: str = ""
    new_errors: list = field(default_factory=list)


def choose_engine(main_text):
    return "xelatex" if XELATEX_HINTS.search(main_text) else "pdflatex"


def check_result(original_files, result_files, main_path):
    """Compile both trees ({path: bytes}) from `main_path` and compare."""
    main_text = original_files[main_path].decode("utf-8", errors="replace")
    if not DOCUMENTCLASS.search(main_text):
        return CompileOutcome(NOT_A_DOCUMENT)

    engine = choose_engine(main_text)
    if shutil.which(engine) is None:
        return CompileOutcome(SKIPPED, engine)

    original = compile_tree(original_files, main_path, engine)
    result = compile_tree(result_files, main_path, engine)
    if result.succeeded:
        return CompileOutcome(OK, engine)

    # Compared without the line number, which an edit may shift.
    known = {_message(error) for error in original.errors}
    new_errors = [error for error in result.errors if _message(error) not in known]
    if not original.succeeded:
        return CompileOutcome(ORIGINAL_FAILS, engine, new_errors)
    return CompileOutcome(BROKEN, engine, new_errors or result.errors)


def compile_tree(files, main_path, engine):
    """Run `engine` once on `main_path` among `files`; its errors from the log."""
    with tempfile.TemporaryDirectory(prefix="polish-tex-") as folder:
        root = Path(folder)
        for path, data in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

        main = root / main_path
        command = [
            engine,
            "-interaction=nonstopmode",
            "-halt-on-error",
            "-no-shell-escape",
            main.name,
        ]
        try:
            completed = subprocess.run(
                command,
                cwd=main.parent,
                env=_tex_environment(root),
                capture_output=True,
                timeout=COMPILE_SECONDS,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            logger.warning("%s on %s ran out of time", engine, main_path)
            return CompileRun(
                False, [f"! {engine} took longer than {COMPILE_SECONDS} s"]
            )

        log = main.with_suffix(".log")
        text = log.read_text(errors="replace") if log.exists() else ""
        return CompileRun(completed.returncode == 0, read_errors(text))


def _tex_environment(root):
    """The environment of a TeX run on an uploaded document.

    Paranoid file access: the document may read and write only below its
    own folder, so that \\input{/etc/passwd} cannot show up in the errors
    the page displays. Shell escape is off here too, not only by flag.
    """
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "TEXMFVAR": str(root / ".texmf-var"),
        "openin_any": "p",
        "openout_any": "p",
        "shell_escape": "f",
    }


def _message(error):
    return error.split(" l.", 1)[0]


def read_errors(log_text):
    """Each error of a TeX log with the line it points at, at most MAX_ERRORS."""
    lines = log_text.splitlines()
    errors = []
    for index, line in enumerate(lines):
        if not ERROR_LINE.match(line):
            continue
        context = next(
            (later for later in lines[index + 1 : index + 8] if later.startswith("l.")),
            "",
        )
        errors.append(f"{line} {context}".strip())
        if len(errors) >= MAX_ERRORS:
            break
    return errors
