"""A real paper as a PDF with a text layer, built for the reading tests.

The text is that of "SciPy 1.0: fundamental algorithms for scientific
computing in Python" (Nature Methods, 2020), from the shared LaTeX source
(scipy/scipy-articles, BSD-3-Clause, see its LICENSE). The source does not
compile as it stands (its class and figures are left out), so its sections
are read with the app's own LaTeX reading and set again in a plain article
with pdflatex, which gives a real multi-page PDF with numbered headings.
"""

import re
import shutil
import subprocess

import pytest
from pypdf import PdfWriter

from academic.papertext import latex_sections

LATEX_SPECIALS = re.compile(r"([\\{}$&#^_%~])")


def scipy_source(shared_dir):
    return (shared_dir / "papers" / "scipy-1.0" / "paper.tex").read_text("utf-8")


def build_scipy_pdf(shared_dir, directory):
    """The path of the SciPy paper set as a PDF, or a skip without pdflatex."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")

    title, sections, _inputs = latex_sections(scipy_source(shared_dir))
    body = [
        "\\documentclass{article}",
        f"\\title{{{_escape(title)}}}",
        "\\author{The SciPy 1.0 contributors}",
        "\\begin{document}",
        "\\maketitle",
    ]
    for section in sections:
        if section.title:
            body.append(f"\\section{{{_escape(section.title)}}}")
        body.append(_escape(section.text))
    body.append("\\end{document}")

    source = directory / "scipy.tex"
    source.write_text("\n\n".join(body), "ascii")
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", source.name],
        cwd=directory,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return directory / "scipy.pdf"


def _escape(text):
    ascii_text = text.encode("ascii", "replace").decode("ascii").replace("?", "-")
    escaped = LATEX_SPECIALS.sub(lambda m: "\\" + m[1] + "{}", ascii_text)
    return escaped.replace("\\\\{}", "\\textbackslash{}")


def blank_pdf(path):
    """A PDF of two pages without any text, as a scan without OCR is."""
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    writer.add_blank_page(width=595, height=842)
    with open(path, "wb") as handle:
        writer.write(handle)
    return path
