"""Paper reading: extraction, the map-reduce within the budget, references,
the conversation about a paper, against the simulator over real HTTP."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import translation

from academic import papertext, reading
from academic.models import Paper, PaperPart
from academic.pdftext import pdf_sections
from academic.reading_tasks import read_paper_part
from assistant.models import ModelProfile
from chat.prompt import count_text_tokens
from chat.tasks import generate_reply
from tests.academic.papers import blank_pdf, build_scipy_pdf, scipy_source
from tests.factories import make_user, queue_reply

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-9"


@pytest.fixture
def scipy_pdf(shared_dir, tmp_path):
    return build_scipy_pdf(shared_dir, tmp_path).read_bytes()


@pytest.fixture
def researcher(client):
    user = make_user(password=PASSWORD)
    client.force_login(user)
    return user


def upload(client, name, data, model="deepseek-v3"):
    return client.post(
        reverse("academic-reading"),
        {"file": SimpleUploadedFile(name, data), "text": "", "model": model},
    )


def read_all(paper):
    for part_id in paper.parts.values_list("pk", flat=True):
        read_paper_part(part_id)
    paper.refresh_from_db()
    return paper


def small_profile(name="deepseek-v3", input_limit=1500, context=3000):
    ModelProfile.objects.update_or_create(
        name=name,
        defaults={
            "is_reasoning": False,
            "context_window": context,
            "input_limit": input_limit,
            "max_output_tokens": 600,
        },
    )


def test_it_extracts_pages_and_numbered_sections_from_a_real_pdf(scipy_pdf):
    title, sections = pdf_sections(scipy_pdf)

    titles = [section.title for section in sections]
    assert title.startswith("SciPy 1.0")
    assert "1 Introduction" in titles and "28 Discussion" in titles
    introduction = sections[titles.index("1 Introduction")]
    assert introduction.pages[0] == 1
    assert "numerical routines for the Python" in " ".join(introduction.text.split())
    pages = sorted({page for section in sections for page in section.pages})
    assert pages == list(range(1, pages[-1] + 1)) and pages[-1] >= 10


def test_it_refuses_a_scanned_pdf_with_a_clear_message(
    client, researcher, tmp_path, model_api
):
    response = upload(client, "scan.pdf", blank_pdf(tmp_path / "s.pdf").read_bytes())

    assert response.status_code == 400
    with translation.override("zh-hans"):
        message = translation.gettext(
            "This PDF has no text layer (it looks like a scan), and no text "
            "recognition runs here. Upload a PDF with text, its LaTeX source, "
            "or paste the text."
        )
    assert message in response.content.decode()
    assert "文字层" in message
    assert not Paper.objects.exists()


def test_it_reads_every_part_of_a_long_paper_within_the_budget(
    client, researcher, scipy_pdf, model_api
):
    small_profile()
    profile = ModelProfile.objects.get(name="deepseek-v3")
    budget = reading.part_budget(profile)

    response = upload(client, "scipy.pdf", scipy_pdf)
    paper = Paper.objects.get()
    assert response.status_code == 302

    parts = list(paper.parts.all())
    assert len(parts) > paper.sections.count() // 2
    for part in parts:
        tokens = sum(
            count_text_tokens(b["text"]) + reading.PASSAGE_OVERHEAD for b in part.blocks
        )
        assert tokens <= budget
    # Completeness: the parts hold every character of every section.
    for section in paper.sections.all():
        joined = "".join(
            b["text"]
            for part in parts
            if part.section_id == section.pk
            for b in part.blocks
        )
        assert joined.replace("\n", "") == "".join(
            b["text"] for b in section.blocks
        ).replace("\n", "")

    status = client.get(reverse("academic-paper-status", args=[paper.pk])).json()
    assert status["total"] == len(parts) and status["finished"] == 0

    read_all(paper)

    assert paper.status == Paper.Status.DONE
    assert set(paper.parts.values_list("status", flat=True)) == {"done"}
    requests = [b for b in model_api.stats["recent_requests"] if b.get("messages")]
    assert len(requests) >= len(parts) + 1
    for heading in reading.SUMMARY_HEADINGS:
        assert heading in paper.summary
    # The last page's passages reached the model and came back as references.
    last_page = max(b["page"] for part in parts for b in part.blocks)
    assert f"[p. {last_page}]" in paper.summary


def test_it_condenses_notes_in_rounds_when_they_do_not_fit_one_request(
    researcher, scipy_pdf, model_api
):
    small_profile(input_limit=700, context=1400)
    title, sections = pdf_sections(scipy_pdf)
    fields = {"title": title, "source_kind": "pdf", "model": "deepseek-v3"}
    paper = reading.store_paper(
        researcher, fields, sections, ModelProfile.objects.get(name="deepseek-v3")
    )

    read_all(paper)

    prompts = [
        b["messages"][0]["content"]
        for b in model_api.stats["recent_requests"]
        if b.get("messages")
    ]
    assert any(p.startswith("You condense notes") for p in prompts)
    assert paper.status == Paper.Status.DONE
    assert re.search(r"\[p\. \d+\]", paper.summary)


def test_it_links_references_to_the_extracted_text(
    client, researcher, scipy_pdf, model_api
):
    upload(client, "scipy.pdf", scipy_pdf)
    paper = read_all(Paper.objects.get())

    page = client.get(paper.get_absolute_url()).content.decode()

    assert '<a href="#page-1" class="paper-ref">[p. 1]</a>' in page
    assert 'id="page-1"' in page and 'id="section-2"' in page
    assert "<script>alert" not in page


def test_it_reads_a_latex_source_by_section_and_names_missing_inputs(
    client, researcher, shared_dir, model_api
):
    source = scipy_source(shared_dir).encode("utf-8")

    upload(client, "paper.tex", source)
    paper = read_all(Paper.objects.get())

    assert paper.source_kind == Paper.SourceKind.LATEX
    assert "scipy-optimize" in paper.missing_inputs
    assert "[§ Introduction]" in paper.summary
    page = client.get(paper.get_absolute_url()).content.decode()
    assert 'class="paper-ref">[§ Introduction]</a>' in page


NUMBERED_LATEX = r"""\documentclass{article}
\title{Boiling at Altitude}
\begin{document}
\maketitle
\begin{abstract}Water boils at 93.4 degrees at 2000 m.\end{abstract}
\section{Introduction} Why kettles matter.
\section[Setup]{Experimental \emph{setup}} A kettle and a thermometer.
\subsection{Sites} Three mountains.
\subsubsection{The highest} Mont Blanc.
\subsection*{A remark} Unnumbered.
\section*{Acknowledgements} The guides.
\appendix
\section{Raw data} Tables.
\subsection{Calibration} The thermometer was checked.
\end{document}
"""


def test_it_names_latex_sections_with_the_papers_own_numbers(
    client, researcher, model_api
):
    upload(client, "paper.tex", NUMBERED_LATEX.encode())
    paper = read_all(Paper.objects.get())

    titles = [s.title for s in paper.sections.all()]
    assert titles == [
        "",
        "1 Introduction",
        "2 Experimental setup",
        "2.1 Sites",
        "2.1.1 The highest",
        "A remark",
        "Acknowledgements",
        "A Raw data",
        "A.1 Calibration",
    ]
    page = client.get(paper.get_absolute_url()).content.decode()
    assert "<h3>2.1 Sites</h3>" in page and "§ 4" not in page
    assert "<h3>论文开头（第一个标题之前）</h3>" in page
    # The notes and the summary cite the sections by the paper's numbers.
    assert "[§ 2.1 Sites]" in paper.summary
    assert 'href="#section-4" class="paper-ref">[§ 2.1 Sites]</a>' in page
    assert 'href="#section-1" class="paper-ref">[§ Front matter]</a>' in page


def test_it_numbers_sections_within_chapters_as_a_report_does():
    source = (
        r"\begin{document}\chapter{Theory}\section{Model}\subsection{Limits}"
        r"\subsubsection{Unnumbered here}\chapter{Practice}\section{Runs}"
        r"\end{document}"
    )

    _title, sections, _inputs = papertext.latex_sections(source)

    assert [s.title for s in sections] == [
        "1 Theory",
        "1.1 Model",
        "1.1.1 Limits",
        "Unnumbered here",
        "2 Practice",
        "2.1 Runs",
    ]


def test_it_reads_pasted_text(client, researcher, model_api):
    text = (
        "A Tiny Paper\n\nAbstract\nWe measure the boiling point of water at "
        "altitude and find 93.4 degrees at 2000 m.\n\n1 Method\nA kettle and a "
        "thermometer were carried up a mountain.\n"
    )
    client.post(reverse("academic-reading"), {"text": text, "model": "deepseek-v3"})
    paper = read_all(Paper.objects.get())

    assert [s.title for s in paper.sections.all()] == ["", "Abstract", "1 Method"]
    assert "93.4 degrees at 2000 m. [§ Abstract]" in paper.summary


def test_it_answers_questions_from_the_relevant_passages(
    client, researcher, scipy_pdf, model_api
):
    upload(client, "scipy.pdf", scipy_pdf)
    paper = read_all(Paper.objects.get())

    response = client.post(reverse("academic-paper-ask", args=[paper.pk]))
    paper.refresh_from_db()
    assert response.url == paper.conversation.get_absolute_url()

    _, reply = queue_reply(
        paper.conversation, "Who funds the development and what does it cost?"
    )
    generate_reply(reply.pk)
    reply.refresh_from_db()

    funding_pages = {
        b["page"] for s in paper.sections.filter(title="26 Funding") for b in s.blocks
    }
    assert any(f"[p. {page}]" in reply.content for page in funding_pages)
    sent = model_api.stats["recent_requests"][-1]["messages"][0]["content"]
    assert sent.startswith("You answer a reader's questions")
    assert "10M dollars" in " ".join(sent.split())

    _, unanswerable = queue_reply(paper.conversation, "Qwertyuiop zxcvbnm?")
    generate_reply(unanswerable.pk)
    unanswerable.refresh_from_db()
    assert "does not answer" in unanswerable.content


def test_it_refuses_an_outsider(client, researcher, model_api):
    paper = Paper.objects.create(owner=researcher, source_kind="text", model="m")
    outsider = make_user(username="outsider")
    client.force_login(outsider)

    for name in ("academic-paper", "academic-paper-status"):
        assert client.get(reverse(name, args=[paper.pk])).status_code == 404
    for name in ("academic-paper-ask", "academic-paper-cancel"):
        assert client.post(reverse(name, args=[paper.pk])).status_code == 404
    paper.refresh_from_db()
    assert paper.conversation is None and paper.status == Paper.Status.READING


def test_it_cancels_the_queued_parts(client, researcher, model_api):
    client.post(
        reverse("academic-reading"),
        {"text": "Abstract\nSome text.\n\n1 Method\nMore.", "model": "deepseek-v3"},
    )
    paper = Paper.objects.get()

    client.post(reverse("academic-paper-cancel", args=[paper.pk]))

    paper.refresh_from_db()
    assert paper.status == Paper.Status.CANCELLED
    assert set(paper.parts.values_list("failure_code", flat=True)) == {"cancelled"}
    assert not paper.parts.exclude(status=PaperPart.Status.FAILED).exists()
