"""The compile check: the original and the result through TeX, compared."""

import shutil

import pytest
from django.urls import reverse

from academic import compiling
from academic.models import PolishJob
from tests.academic.jobs import run, start
from tests.factories import make_user

needs_pdflatex = pytest.mark.skipif(
    shutil.which("pdflatex") is None, reason="pdflatex is not installed"
)
DOCUMENT = (
    b"\\documentclass{article}\n\\begin{document}\n"
    b"In addition, we run a lot of tests on \\textbf{three} datasets.\n"
    b"\\end{document}\n"
)
LOG = """This is pdfTeX
! Undefined control sequence.
l.7 \\foo
         bar
! Missing } inserted.
<inserted text>
                }
l.9 \\end{document}
"""


def test_it_reads_each_error_with_its_line():
    assert compiling.read_errors(LOG) == [
        "! Undefined control sequence. l.7 \\foo",
        "! Missing } inserted. l.9 \\end{document}",
    ]


def test_it_picks_xelatex_for_chinese_documents():
    assert compiling.choose_engine("\\documentclass{ctexart}") == "xelatex"
    assert compiling.choose_engine("\\usepackage[UTF8]{xeCJK}") == "xelatex"
    assert compiling.choose_engine("\\documentclass{article}") == "pdflatex"


def test_it_skips_a_fragment_and_a_machine_without_tex(monkeypatch):
    fragment = {"part.tex": b"Just a paragraph."}
    assert compiling.check_result(fragment, fragment, "part.tex").status == (
        compiling.NOT_A_DOCUMENT
    )

    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    document = {"paper.tex": DOCUMENT}
    assert compiling.check_result(document, document, "paper.tex").status == (
        compiling.SKIPPED
    )


@needs_pdflatex
def test_it_reports_only_the_errors_the_result_added():
    broken = DOCUMENT.replace(b"\\textbf{three}", b"\\textbf{three")

    outcome = compiling.check_result(
        {"paper.tex": DOCUMENT}, {"paper.tex": broken}, "paper.tex"
    )

    assert outcome.status == compiling.BROKEN and outcome.engine == "pdflatex"
    assert outcome.new_errors and outcome.new_errors[0].startswith("! ")


@needs_pdflatex
def test_it_cannot_judge_when_the_original_fails_too():
    missing = DOCUMENT.replace(
        b"\\begin{document}", b"\\usepackage{no-such-package}\n\\begin{document}"
    )

    outcome = compiling.check_result(
        {"paper.tex": missing}, {"paper.tex": missing}, "paper.tex"
    )

    assert outcome.status == compiling.ORIGINAL_FAILS
    assert outcome.new_errors == []


@needs_pdflatex
@pytest.mark.django_db
def test_it_compiles_a_finished_job_and_shows_the_outcome(client, model_api):
    user = make_user()
    client.force_login(user)

    job = run(start(user, DOCUMENT))
    status = client.get(reverse("academic-job-status", args=[job.pk])).json()

    assert "Moreover, we ran many tests" in job.merged_text(accept_all=True)
    assert job.compile_status == PolishJob.CompileStatus.OK
    assert job.compile_engine == "pdflatex"
    assert status["compile"]["status"] == "ok"
    assert status["compile"]["message"] == "结果可以用 pdflatex 编译，与原文一致。"


@pytest.mark.django_db
def test_it_does_not_compile_a_cancelled_or_plain_text_job(model_api):
    from academic import actions

    user = make_user()
    plain = run(start(user, b"Some text.", name="notes.txt", kind="plain"))
    cancelled = start(user, DOCUMENT)
    actions.cancel_job(cancelled)

    assert plain.compile_status == PolishJob.CompileStatus.NOT_LATEX
    cancelled.refresh_from_db()
    assert cancelled.compile_status == PolishJob.CompileStatus.NOT_LATEX


@needs_pdflatex
def test_it_lets_a_document_read_nothing_outside_its_folder():
    prying = DOCUMENT.replace(b"In addition", b"\\input{/etc/hostname} In addition")

    run = compiling.compile_tree({"paper.tex": prying}, "paper.tex", "pdflatex")

    assert not run.succeeded
    assert any("/etc/hostname" in error or "not found" in error for error in run.errors)


needs_xelatex = pytest.mark.skipif(
    shutil.which("xelatex") is None, reason="xelatex is not installed"
)
CHINESE_DOCUMENT = (
    "\\documentclass{ctexart}\n\\begin{document}\n"
    "我们在\\textbf{三个}数据集上进行了大量测试，结果表明该方法是有效的。\n"
    "\\end{document}\n"
).encode()


@needs_xelatex
def test_it_compiles_a_ctex_document_with_xelatex_and_finds_what_broke():
    broken = CHINESE_DOCUMENT.replace(
        "\\textbf{三个}".encode(), "\\textbf{三个".encode()
    )

    fine = compiling.check_result(
        {"thesis.tex": CHINESE_DOCUMENT}, {"thesis.tex": CHINESE_DOCUMENT}, "thesis.tex"
    )
    outcome = compiling.check_result(
        {"thesis.tex": CHINESE_DOCUMENT}, {"thesis.tex": broken}, "thesis.tex"
    )

    assert (fine.status, fine.engine) == (compiling.OK, "xelatex")
    assert (outcome.status, outcome.engine) == (compiling.BROKEN, "xelatex")
    assert outcome.new_errors and outcome.new_errors[0].startswith("! ")


@needs_xelatex
@pytest.mark.django_db
def test_a_chinese_job_is_compiled_with_xelatex(client, model_api):
    user = make_user()
    client.force_login(user)

    job = run(start(user, CHINESE_DOCUMENT, name="thesis.tex"))
    status = client.get(reverse("academic-job-status", args=[job.pk])).json()

    assert job.compile_engine == "xelatex"
    assert job.compile_status == PolishJob.CompileStatus.OK
    assert status["compile"]["status"] == "ok"
    assert "xelatex" in status["compile"]["message"]
