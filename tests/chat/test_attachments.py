"""Files attached to a question: read faithfully, sent to the model, bounded."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from chat import actions
from chat.attachments import AttachmentProblem, attach, read_attachment
from chat.models import Attachment, Message
from chat.prompt import build_messages
from chat.tasks import generate_reply
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db


def pdf_with_text(*page_texts):
    """A small, valid PDF whose pages carry these lines of Helvetica text."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None]
    kids = []
    for text in page_texts:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET" if text else ""
        content_number = len(objects) + 2
        page_number = len(objects) + 1
        kids.append(f"{page_number} 0 R")
        objects.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Contents {content_number} 0 R "
            "/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 "
            "/BaseFont /Helvetica >> >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"

    body = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(body))
        body += f"{number} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref_at = len(body)
    body += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        body += f"{offset:010d} 00000 n \n".encode()
    body += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n"
        f"startxref\n{xref_at}\n%%EOF\n"
    ).encode()
    return body


def test_it_reads_a_gbk_text_file_as_chinese():
    kind, text = read_attachment("笔记.txt", "自注意力机制的复杂度".encode("gbk"))

    assert (kind, text) == ("text", "自注意力机制的复杂度")


def test_it_reads_each_page_of_a_pdf():
    kind, text = read_attachment(
        "paper.pdf", pdf_with_text("Attention is all you need", "Results")
    )

    assert kind == "pdf"
    assert "[page 1]\nAttention is all you need" in text
    assert "[page 2]\nResults" in text


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("scan.pdf", pdf_with_text(""), "没有文字层"),
        ("broken.pdf", b"%PDF-1.4 garbage", "已损坏"),
        ("figure.png", b"\x89PNG", "请附加文本"),
        ("empty.md", b"   \n", "没有文字"),
        ("big.txt", b"a" * (10 * 1024 * 1024 + 1), "超过 10 MB"),
    ],
)
def test_it_refuses_what_it_cannot_read_with_a_reason(name, data, expected):
    with pytest.raises(AttachmentProblem) as refused:
        read_attachment(name, data)

    assert expected in str(refused.value.message)


def test_it_puts_the_files_text_after_the_question_in_the_prompt():
    user = make_user()
    conversation = make_conversation(user)
    attachment = attach(user, "notes.md", b"# Method\nWe use $x^2$.")

    _question, reply = actions.post_question(
        conversation, "Summarise my notes", "deepseek-r1", [attachment.pk]
    )

    asked = build_messages(conversation, reply)[-1]["content"]
    assert asked == (
        'Summarise my notes\n\n<attachment name="notes.md">\n'
        "# Method\nWe use $x^2$.\n</attachment>"
    )


def test_it_never_attaches_another_users_file():
    owner = make_user("owner")
    outsider_file = attach(make_user("outsider"), "secret.txt", b"secret")
    conversation = make_conversation(owner)

    question, _reply = actions.post_question(
        conversation, "q", "deepseek-r1", [outsider_file.pk]
    )

    assert question.attachments.count() == 0
    assert Attachment.objects.get(pk=outsider_file.pk).message is None


def test_it_sends_the_file_to_the_model(model_api):
    user = make_user()
    conversation = make_conversation(user)
    question, reply = queue_reply(conversation, "What does the file say?")
    attach(user, "data.txt", b"The measured value is 42.").__class__.objects.update(
        message=question
    )

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP
    sent = model_api.stats["recent_requests"][-1]["messages"][-1]["content"]
    assert "The measured value is 42." in sent


def test_it_refuses_a_question_whose_file_overflows_the_input_limit(model_api):
    user = make_user()
    conversation = make_conversation(user)
    question, reply = queue_reply(conversation, "Read this")
    attachment = attach(user, "long.txt", ("词" * 20000).encode())
    Attachment.objects.filter(pk=attachment.pk).update(message=question)

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == ("error", "input_too_long")
    assert model_api.stats["requests"] == 0


def test_it_answers_an_upload_with_the_files_name_or_the_reason(client):
    client.force_login(make_user())

    good = client.post(
        reverse("chat-attach"),
        {"file": SimpleUploadedFile("a.tex", b"\\section{Intro} Text.")},
    )
    bad = client.post(
        reverse("chat-attach"), {"file": SimpleUploadedFile("a.exe", b"MZ")}
    )

    assert good.status_code == 200 and good.json()["name"] == "a.tex"
    assert bad.status_code == 400 and "请附加文本" in bad.json()["error"]


def test_it_shows_the_files_of_a_question_on_the_page(client):
    user = make_user()
    client.force_login(user)
    conversation = make_conversation(user)
    question = Message.objects.create(
        conversation=conversation, role="user", content="see file"
    )
    Attachment.objects.create(
        user=user,
        message=question,
        name="笔记.md",
        kind="markdown",
        text="x",
        size_bytes=1,
    )

    page = client.get(conversation.get_absolute_url()).content.decode()

    assert "\\u7b14\\u8bb0.md" in page or "笔记.md" in page


def test_it_sends_anonymous_uploads_to_sign_in(client):
    response = client.post(
        reverse("chat-attach"), {"file": SimpleUploadedFile("a.txt", b"x")}
    )

    assert response.status_code == 302
