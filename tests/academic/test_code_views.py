"""The code analysis pages: upload, the analysis page and its references,
the source view, progress JSON, Cancel and the follow-up conversation."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils.html import escape

from academic.code_models import CodeAnalysis
from academic.code_tasks import write_overview
from chat.models import Conversation
from tests.academic.codeprojects import h11_zip, make_zip
from tests.academic.test_code_jobs import run, start
from tests.factories import make_user

pytestmark = pytest.mark.django_db

ANALYSIS_PAGES = [
    ("academic-code-analysis", "get"),
    ("academic-code-status", "get"),
    ("academic-code-cancel", "post"),
    ("academic-code-ask", "post"),
]


@pytest.fixture
def researcher(client):
    user = make_user()
    client.force_login(user)
    return user


@pytest.fixture
def eager_overview(monkeypatch):
    monkeypatch.setattr(write_overview, "delay", lambda pk: None)


def upload(client, name, data, model="deepseek-v3"):
    return client.post(
        reverse("academic-code-home"),
        {"file": SimpleUploadedFile(name, data), "model": model},
    )


def test_it_sends_anonymous_visitors_to_sign_in(client):
    analysis = start(b"x = 1\n", name="x.py")

    urls = [reverse("academic-code-home")]
    urls += [reverse(name, args=[analysis.pk]) for name, _method in ANALYSIS_PAGES]
    urls.append(reverse("academic-code-source", args=[analysis.pk, "x.py"]))
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


def test_it_refuses_an_outsider_every_page_of_an_analysis(client, researcher):
    analysis = start(b"x = 1\n", name="x.py", owner=make_user("colleague"))

    for name, method in ANALYSIS_PAGES:
        response = getattr(client, method)(reverse(name, args=[analysis.pk]))
        assert response.status_code == 404, name
    source = reverse("academic-code-source", args=[analysis.pk, "x.py"])
    assert client.get(source).status_code == 404
    assert Conversation.objects.count() == 0
    analysis.refresh_from_db()
    assert analysis.status == CodeAnalysis.Status.RUNNING


def test_it_starts_an_analysis_from_an_uploaded_zip(client, researcher, model_api):
    response = upload(client, "h11.zip", h11_zip())

    analysis = CodeAnalysis.objects.get()
    assert response.status_code == 302 and response.url == analysis.get_absolute_url()
    assert analysis.owner == researcher and analysis.name == "h11.zip"
    assert analysis.files.filter(path="h11/_connection.py").exists()


def test_it_starts_an_analysis_from_one_source_file(client, researcher, model_api):
    upload(client, "tool.cpp", b"int main() { return 0; }\n")

    analysis = CodeAnalysis.objects.get()
    assert list(analysis.files.values_list("path", flat=True)) == ["tool.cpp"]
    assert analysis.project_map["entry_points"][0]["kind"] == "main_function"


def test_it_counts_one_line_in_the_singular_in_english(client, researcher):
    upload(client, "tool.cpp", b"int main() { return 0; }\n")

    analysis = CodeAnalysis.objects.get()
    page = client.get(analysis.get_absolute_url(), HTTP_ACCEPT_LANGUAGE="en").text
    assert " · 1 line</summary>" in page

    page = client.get(analysis.get_absolute_url()).text
    assert " · 1 行</summary>" in page


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.txt", b"hello", "请上传项目的 .zip"),
        ("p.zip", b"not a zip", "不是 zip 压缩包"),
        ("p.zip", make_zip({"../evil.py": "x = 1\n"}), "不安全的路径"),
        ("p.zip", make_zip({"README.md": "# hi\n"}), "没有找到 Python 或 C/C++ 源文件"),
    ],
)
def test_it_refuses_a_bad_upload_in_the_users_language(
    client, researcher, model_api, name, data, message
):
    response = upload(client, name, data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert CodeAnalysis.objects.count() == 0


def test_it_links_references_in_the_summaries_to_the_source(
    client, researcher, model_api, eager_overview
):
    analysis = run(start(h11_zip(), owner=researcher))

    page = client.get(analysis.get_absolute_url()).content.decode()

    link = re.search(
        r'<a href="(/code/\d+/source/h11/_connection.py#L(\d+))" data-code-ref>'
        r"h11/_connection.py:(\d+)</a>",
        page,
    )
    assert link and link[2] == link[3]
    source = client.get(link[1].split("#")[0]).content.decode()
    line = analysis.files.get(path="h11/_connection.py").text.split("\n")[
        int(link[2]) - 1
    ]
    assert f'id="L{link[2]}"' in source
    assert re.search(
        rf'id="L{link[2]}">.*?<pre>{re.escape(escape(line))}</pre>', source
    )
    assert "data-code-diagram" in page and 'data-node="h11/_connection.py"' in page


def test_it_escapes_what_the_model_writes(client, researcher, model_api):
    analysis = start(b"x = 1\n", name="x.py", owner=researcher)
    part = analysis.parts.get()
    part.finish("<script>alert(1)</script> [x](javascript:alert(1)) x.py:1")

    page = client.get(analysis.get_absolute_url()).content.decode()

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="javascript:' not in page
    assert re.search(
        r'<a href="/code/\d+/source/x.py#L1" data-code-ref>x.py:1</a>', page
    )


def test_it_keeps_underscores_of_a_bare_reference_from_markdown(
    client, researcher, model_api
):
    analysis = start(b"x = 1\n", name="__init__.py", owner=researcher)
    analysis.parts.get().finish("See __init__.py:1 and `__init__.py:1`.")

    page = client.get(analysis.get_absolute_url()).content.decode()

    links = re.findall(
        r'<code><a href="/code/\d+/source/__init__.py#L1" data-code-ref>'
        r"__init__.py:1</a></code>",
        page,
    )
    assert len(links) == 2
    assert "<strong>init</strong>" not in page


def test_it_reports_progress_as_json(client, researcher, model_api, eager_overview):
    analysis = start(h11_zip(), owner=researcher)
    url = reverse("academic-code-status", args=[analysis.pk])

    before = client.get(url).json()
    run(analysis)
    after = client.get(url).json()

    assert before["status"] == "running" and before["finished"] == 0
    assert after == {
        "status": "done",
        "overview": "done",
        "finished": before["total"],
        "total": before["total"],
        "queuePosition": None,
    }


def test_it_cancels_an_analysis(client, researcher):
    analysis = start(b"x = 1\n", name="x.py", owner=researcher)

    response = client.post(reverse("academic-code-cancel", args=[analysis.pk]))

    analysis.refresh_from_db()
    assert response.status_code == 302
    assert analysis.status == CodeAnalysis.Status.CANCELLED
    assert (
        client.get(reverse("academic-code-cancel", args=[analysis.pk])).status_code
        == 405
    )


def test_it_opens_one_follow_up_conversation(
    client, researcher, model_api, eager_overview
):
    analysis = run(start(h11_zip(), owner=researcher))
    url = reverse("academic-code-ask", args=[analysis.pk])

    first = client.post(url)
    second = client.post(url)

    conversation = Conversation.objects.get()
    assert first.url == second.url == conversation.get_absolute_url()
    assert conversation.user == researcher and conversation.title == "h11.zip"
    assert "Project map:" in conversation.context
    assert client.get(url).status_code == 405


def test_it_links_the_analysis_from_the_chat_sidebar(client, researcher, model_api):
    page = client.get(reverse("chat-home")).content.decode()

    assert f'href="{reverse("academic-code-home")}" data-code-link' in page


def test_it_lists_analyses_in_the_admin(client):
    admin = get_user_model().objects.create_superuser("admin", password="x-9-long-pass")
    analysis = start(b"x = 1\n", name="tool.py")
    client.force_login(admin)

    listing = client.get(reverse("admin:academic_codeanalysis_changelist"))
    detail = client.get(
        reverse("admin:academic_codeanalysis_change", args=[analysis.pk])
    )

    assert listing.status_code == 200 and "tool.py" in listing.content.decode()
    assert detail.status_code == 200
