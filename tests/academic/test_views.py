"""The workspace pages: the form, the job page and its JSON, decisions,
cancel and download."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from academic.models import ChangeDecision, PolishChunk, PolishJob
from assistant.models import ModelProfile
from tests.academic.jobs import case_bytes, run, start
from tests.factories import make_user

pytestmark = pytest.mark.django_db

JOB_PAGES = [
    ("academic-job", "get"),
    ("academic-job-status", "get"),
    ("academic-job-chunks", "get"),
    ("academic-download", "get"),
    ("academic-decide", "post"),
    ("academic-cancel", "post"),
]


def form_data(**values):
    data = {
        "task": "polish",
        "preset": "journal",
        "model": "deepseek-v3",
        "source_kind": "latex",
        "glossary": "",
        "text": "",
    }
    data.update(values)
    return data


@pytest.fixture
def researcher(client):
    user = make_user()
    client.force_login(user)
    return user


def test_it_sends_anonymous_visitors_to_sign_in(client):
    job = start(make_user(), b"Some text.")

    pages = [reverse("academic-home")] + [
        reverse(name, args=[job.pk]) for name, _method in JOB_PAGES
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


def test_it_hides_another_users_job(client, researcher):
    job = start(make_user("colleague"), b"Some text.")

    for name, method in JOB_PAGES:
        response = getattr(client, method)(reverse(name, args=[job.pk]))
        assert response.status_code == 404, name


def test_it_shows_the_form_and_earlier_jobs(client, researcher, model_api):
    start(researcher, b"Some text.", name="draft.tex")

    response = client.get(reverse("academic-home"))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="file"' in html and 'value="deepseek-v3"' in html
    assert "draft.tex" in html
    assert reverse("chat-home") in html


def test_it_links_the_workspace_from_the_chat_sidebar(client, researcher, model_api):
    response = client.get(reverse("chat-home"))

    assert reverse("academic-home") in response.content.decode()


def test_it_starts_a_job_from_an_uploaded_gbk_file(client, researcher, model_api):
    data = "本文提出了一种新方法。\r\n".encode("gbk")
    upload = SimpleUploadedFile("论文.tex", data)

    response = client.post(reverse("academic-home"), form_data(file=upload))

    job = PolishJob.objects.get()
    assert response.status_code == 302 and response.url == job.get_absolute_url()
    assert job.owner == researcher and job.file_name == "论文.tex"
    (polish_file,) = job.files.all()
    assert polish_file.encoding == "gb18030"
    assert polish_file.newline == PolishJob.Newline.CRLF
    assert polish_file.source_text == "本文提出了一种新方法。\n"


def test_it_starts_a_job_from_pasted_text(client, researcher, model_api):
    response = client.post(
        reverse("academic-home"),
        form_data(text="First line.\r\nSecond line.", source_kind="plain"),
    )

    job = PolishJob.objects.get()
    assert response.status_code == 302
    (polish_file,) = job.files.all()
    assert polish_file.source_text == "First line.\nSecond line."
    assert polish_file.source_kind == "plain" and job.chunks.count() == 1


def set_thinking_switch(model, switch):
    profile = ModelProfile.ensure(model)
    profile.thinking_switch = switch
    profile.save(update_fields=["thinking_switch"])


Switch = ModelProfile.ThinkingSwitch
# Long enough for several chunks, each with edits the simulator makes.
SEVERAL_CHUNKS = "\n\n".join(
    f"Part {number}. " + "In addition, we run a lot of tests on big inputs. " * 60
    for number in range(3)
)


@pytest.mark.parametrize(
    ("model", "switch", "thinking", "sent"),
    [
        (
            "deepseek-r1-vllm",
            Switch.CHAT_TEMPLATE_KWARGS,
            False,
            {"chat_template_kwargs": {"enable_thinking": False}},
        ),
        (
            "deepseek-r1-vllm",
            Switch.CHAT_TEMPLATE_KWARGS,
            True,
            {"chat_template_kwargs": {"enable_thinking": True}},
        ),
        ("deepseek-r1", Switch.REASONING_EFFORT, False, {"reasoning_effort": "none"}),
        ("deepseek-r1", Switch.REASONING_EFFORT, True, {}),
    ],
)
def test_it_sends_the_thinking_switch_with_every_chunks_request(
    client, researcher, model_api, model, switch, thinking, sent
):
    set_thinking_switch(model, switch)
    values = form_data(text=SEVERAL_CHUNKS, source_kind="plain", model=model)
    if thinking:
        values["thinking"] = "on"

    client.post(reverse("academic-home"), values)
    job = run(PolishJob.objects.get())

    requests = [
        body for body in model_api.stats["recent_requests"] if body.get("stream")
    ]
    assert job.thinking is thinking
    assert job.chunks.count() > 1
    assert len(requests) == job.chunks.count()
    for body in requests:
        switch_fields = {
            name: body[name]
            for name in ("chat_template_kwargs", "reasoning_effort")
            if name in body
        }
        assert switch_fields == sent
    statuses = set(job.chunks.values_list("status", flat=True))
    assert statuses == {PolishChunk.Status.DONE}
    assert "Moreover, we ran many tests on large inputs." in job.merged_text(True)


def test_it_offers_the_thinking_switch_for_the_models_that_can_switch(
    client, researcher, model_api
):
    set_thinking_switch("deepseek-r1-vllm", Switch.CHAT_TEMPLATE_KWARGS)

    response = client.get(reverse("academic-home"))

    assert response.context["thinking_models"] == ["deepseek-r1-vllm"]
    html = response.content.decode()
    assert 'name="thinking"' in html and "data-thinking-field" in html
    assert "思考（模型先推理再回答）" in html


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (
            SimpleUploadedFile("paper.pdf", b"%PDF"),
            "只能读取 .txt、.md、.tex 和 .zip 文件。",
        ),
        (
            SimpleUploadedFile("paper.tex", bytes(range(128, 256)) * 4),
            "无法识别该文件的字符编码",
        ),
        (None, "请先粘贴文本或选择文件。"),
    ],
)
def test_it_refuses_a_bad_upload_with_a_clear_message(
    client, researcher, model_api, upload, message
):
    data = form_data(file=upload) if upload else form_data()

    response = client.post(reverse("academic-home"), data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not PolishJob.objects.exists()


def test_it_reports_progress_and_chunks_as_json(
    client, researcher, model_api, shared_dir
):
    job = run(start(researcher, case_bytes(shared_dir, "c01_custom_macros.tex")))
    (chunk,) = job.chunks.all()

    status = client.get(reverse("academic-job-status", args=[job.pk])).json()
    chunks = client.get(
        reverse("academic-job-chunks", args=[job.pk]), {"ids": str(chunk.pk)}
    ).json()

    assert status["status"] == "done" and status["finished"] == status["total"] == 1
    (data,) = chunks["chunks"]
    assert data["original"] == chunk.original_text
    assert len(data["changes"]) == len(chunk.changes()) > 0
    assert all(change["accepted"] for change in data["changes"])


def test_it_explains_a_kept_chunk_in_the_users_language(
    client, researcher, model_api, shared_dir
):
    source = case_bytes(shared_dir, "c01_custom_macros.tex")
    job = run(start(researcher, source, glossary="[[sim damage=key]]"))
    (chunk,) = job.chunks.all()

    chinese = client.get(
        reverse("academic-job-chunks", args=[job.pk]), {"ids": str(chunk.pk)}
    ).json()
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    english = client.get(
        reverse("academic-job-chunks", args=[job.pk]), {"ids": str(chunk.pk)}
    ).json()

    assert chinese["chunks"][0]["reason"] == "引用、交叉引用或标签的键被改动了。"
    assert english["chunks"][0]["reason"] == (
        "Citation, reference or label keys were changed."
    )
    assert chinese["chunks"][0]["changes"] == []


def test_it_saves_decisions_and_downloads_the_merged_file(
    client, researcher, model_api, shared_dir
):
    source = case_bytes(shared_dir, "c09_cjk_diff_before.tex")
    job = run(start(researcher, source, name="摘要.tex"))
    (chunk,) = job.chunks.all()
    url = reverse("academic-decide", args=[job.pk])

    response = client.post(
        url,
        json.dumps({"chunk": chunk.pk, "change": 1, "accepted": False}),
        content_type="application/json",
    )
    download = client.get(reverse("academic-download", args=[job.pk]))

    assert response.status_code == 200
    assert ChangeDecision.objects.get().accepted is False
    assert download.content == source.replace("提出了".encode(), "提出".encode())
    assert "filename*=UTF-8''%E6%91%98%E8%A6%81.tex" in download["Content-Disposition"]


def test_it_accepts_and_rejects_everything_at_once(
    client, researcher, model_api, shared_dir
):
    source = case_bytes(shared_dir, "c01_custom_macros.tex")
    job = run(start(researcher, source))
    url = reverse("academic-decide", args=[job.pk])
    download_url = reverse("academic-download", args=[job.pk])

    client.post(url, json.dumps({"all": False}), content_type="application/json")
    rejected = client.get(download_url).content
    client.post(url, json.dumps({"all": True}), content_type="application/json")
    accepted = client.get(download_url).content

    assert rejected == source
    assert accepted == job.chunks.get().result_text.encode()


def test_it_refuses_a_malformed_decision(client, researcher):
    job = start(researcher, b"Some text.")

    response = client.post(
        reverse("academic-decide", args=[job.pk]),
        json.dumps({"chunk": "x"}),
        content_type="application/json",
    )

    assert response.status_code == 400


def test_it_cancels_a_job(client, researcher):
    job = start(researcher, b"Some text to polish.")

    response = client.post(reverse("academic-cancel", args=[job.pk]))

    job.refresh_from_db()
    assert response.status_code == 302
    assert job.status == PolishJob.Status.CANCELLED
    assert list(job.chunks.values_list("status", "failure_code")) == [
        ("kept", "cancelled")
    ]


def test_it_downloads_a_gbk_file_as_utf8_on_request(client, researcher):
    job = start(researcher, "旧文本。\r\n".encode("gbk"))
    job.chunks.get().finish("新文本。\n")

    own = client.get(reverse("academic-download", args=[job.pk]))
    utf8 = client.get(reverse("academic-download", args=[job.pk]), {"utf8": "1"})

    assert own.content == "新文本。\r\n".encode("gbk")
    assert own["Content-Type"] == "text/plain; charset=gb18030"
    assert utf8.content == "新文本。\r\n".encode()


def test_it_lists_jobs_in_the_admin(client):
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("admin", password="x-9-long-pass")
    job = start(make_user(), b"Some text.", name="draft.tex")
    client.force_login(admin)

    listing = client.get(reverse("admin:academic_polishjob_changelist"))
    detail = client.get(reverse("admin:academic_polishjob_change", args=[job.pk]))

    assert listing.status_code == 200 and "draft.tex" in listing.content.decode()
    assert detail.status_code == 200
