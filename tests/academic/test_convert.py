"""The vision-model path, end to end against the simulator over real HTTP."""

import base64
import threading
import time

import pytest
from django.db import connections
from django.utils import translation

from academic import img2tex
from academic.imaging import normalise
from academic.models import Conversion
from academic.tasks import convert_image
from assistant.admission import INTERACTIVE, wait_for_slot
from assistant.models import ModelProfile, OpenRequest, Quota
from chat.models import Message
from chat.tasks import generate_reply
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db

VISION_MODEL = "qwen2.5-vl-sim"


def make_conversion(
    shared_dir, kind="formula", target="latex", name="f17.png", owner=None
):
    image = normalise((shared_dir / "img2latex-eval/images" / name).read_bytes())
    return Conversion.objects.create(
        owner=owner or make_user(),
        kind=kind,
        target=target,
        image=image.png,
        image_width=image.width,
        image_height=image.height,
        model=VISION_MODEL,
    )


def image_request(simulator):
    body = simulator.stats["recent_requests"][-1]
    [message] = body["messages"]
    text_part, image_part = message["content"]
    return body, text_part, image_part


def test_it_sends_the_image_as_a_png_data_uri_and_strips_the_fence(
    model_api, shared_dir
):
    conversion = make_conversion(shared_dir)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE
    assert conversion.source == r"\frac{a+b}{2} \geq \sqrt{ab}"
    assert conversion.completion_tokens > 0
    body, text_part, image_part = image_request(model_api)
    assert body["model"] == VISION_MODEL
    assert body["temperature"] == 0
    assert text_part["type"] == "text"
    assert "into LaTeX" in text_part["text"]
    assert "no $ or \\[ delimiters" in text_part["text"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == bytes(conversion.image)


@pytest.mark.parametrize(
    ("target", "asked", "answer_starts"),
    [
        ("latex", "LaTeX tabular environment", "\\begin{tabular}"),
        ("markdown", "Markdown pipe table", "| Model"),
        ("html", "HTML <table>", "<table>"),
    ],
)
def test_it_asks_for_the_chosen_table_output(
    model_api, shared_dir, target, asked, answer_starts
):
    conversion = make_conversion(shared_dir, "table", target, name="t01.png")

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE
    assert conversion.source.startswith(answer_starts)
    assert "```" not in conversion.source
    _body, text_part, _image_part = image_request(model_api)
    assert asked in text_part["text"]
    if target != "markdown":
        assert "colspan" in text_part["text"] or "multicolumn" in text_part["text"]


def test_it_tells_the_user_when_the_backend_is_busy(settings, model_api, shared_dir):
    settings.MODEL_API_BUSY_RETRIES = 0
    model_api.queue_error(429, "Rate limit reached", "rate_limit_error")
    conversion = make_conversion(shared_dir)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.ERROR
    assert conversion.error_code == "rate_limited"
    assert conversion.error_detail == "Rate limit reached"
    with translation.override("zh-hans"):
        assert "429" in str(conversion.error_message)
        assert "图片" in str(conversion.error_message)


def test_it_asks_a_busy_backend_again_before_giving_up(settings, model_api, shared_dir):
    settings.MODEL_API_BUSY_RETRIES = 2
    settings.MODEL_API_BUSY_MAX_WAIT = 0.1
    model_api.queue_error(503, "Server overloaded", "server_error")
    conversion = make_conversion(shared_dir)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE
    assert model_api.stats["requests"] == 2


def test_it_reports_a_server_error(model_api, shared_dir):
    model_api.queue_error(500, "CUDA out of memory", "server_error")
    conversion = make_conversion(shared_dir)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.error_code == "server_error"
    assert conversion.error_detail == "CUDA out of memory"


def test_it_reports_an_unreachable_backend(settings, model_api, shared_dir):
    settings.MODEL_API_BASE_URL = "http://127.0.0.1:9/v1"
    conversion = make_conversion(shared_dir)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.error_code == "unreachable"


def test_it_skips_a_conversion_no_longer_queued(model_api, shared_dir):
    conversion = make_conversion(shared_dir)
    conversion.mark_running()

    convert_image(conversion.pk)

    assert model_api.stats["requests"] == 0


def test_it_guesses_which_models_read_images():
    assert ModelProfile.defaults_for("Qwen2.5-VL-7B-Instruct")["supports_vision"]
    assert ModelProfile.defaults_for("llava-v1.6-34b")["supports_vision"]
    assert ModelProfile.defaults_for("gpt-4o-mini")["supports_vision"]
    assert not ModelProfile.defaults_for("deepseek-r1-vllm")["supports_vision"]
    assert not ModelProfile.defaults_for("deepseek-v3")["supports_vision"]


@pytest.mark.parametrize(
    ("reply", "source"),
    [
        ("```latex\nx^2\n```", "x^2"),
        ("Here it is:\n```\n\\alpha\n```\nDone.", "\\alpha"),
        ("$$\\frac{1}{2}$$", "\\frac{1}{2}"),
        ("\\[ a+b \\]", "a+b"),
        ("$x$", "x"),
        ("\\begin{equation*}E=mc^2\\end{equation*}", "E=mc^2"),
        ("$a$ and $b$", "$a$ and $b$"),
    ],
)
def test_it_cleans_fences_and_delimiters_from_a_formula(reply, source):
    assert img2tex.clean_reply(reply, "formula") == source


def test_it_keeps_dollars_in_a_table_reply():
    reply = "```markdown\n| $x$ | 1 |\n| --- | --- |\n```"

    assert img2tex.clean_reply(reply, "table") == "| $x$ | 1 |\n| --- | --- |"


@pytest.mark.parametrize(
    ("reply", "code"),
    [("NO_FORMULA", "no_formula"), ("```\n```", "empty_reply"), ("", "empty_reply")],
)
def test_it_refuses_a_reply_without_source(reply, code):
    with pytest.raises(img2tex.ConversionFailed) as caught:
        img2tex.clean_reply(reply, "formula")

    assert caught.value.code == code


@pytest.mark.parametrize(
    ("wrapper", "target", "text"),
    [
        ("none", "latex", "x^2"),
        ("inline", "latex", "$x^2$"),
        ("display", "latex", "\\[\nx^2\n\\]"),
        ("display", "markdown", "$$\nx^2\n$$"),
    ],
)
def test_it_adds_only_the_delimiters_the_user_chose(wrapper, target, text):
    conversion = Conversion(kind="formula", target=target, wrapper=wrapper)
    conversion.source = "x^2"

    assert conversion.output_text() == text


@pytest.mark.django_db(transaction=True)
def test_it_waits_its_turn_in_the_same_queue_as_chat(settings, model_api, shared_dir):
    """With the backend full, the conversion records its queue position."""
    profile = ModelProfile.ensure(VISION_MODEL)
    profile.concurrency_limit = 1
    profile.save(update_fields=["concurrency_limit"])
    conversion = make_conversion(shared_dir)
    pool = f"{settings.MODEL_API_BASE_URL}|{VISION_MODEL}"
    held = wait_for_slot(pool, "a-colleague", INTERACTIVE, capacity=1)

    def run_in_worker_thread():
        try:
            convert_image(conversion.pk)
        finally:
            # As a Celery worker does after each task.
            connections.close_all()

    worker = threading.Thread(target=run_in_worker_thread)

    try:
        worker.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            conversion.refresh_from_db()
            if conversion.queue_position:
                break
            time.sleep(0.05)
        assert conversion.queue_position == 1
        assert conversion.status == Conversion.Status.QUEUED
        assert model_api.stats["requests"] == 0
    finally:
        held.release()
        worker.join(timeout=20)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE
    assert conversion.queue_position is None


def test_it_refuses_a_conversion_while_a_chat_reply_is_being_written(
    model_api, shared_dir
):
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    _, writing = queue_reply(make_conversation(user), "a question")
    Message.objects.filter(pk=writing.pk).update(status=Message.Status.STREAMING)
    conversion = make_conversion(shared_dir, owner=user)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.ERROR
    assert conversion.error_code == "quota_concurrent"
    assert conversion.error_detail == "limit 1, open 1"
    with translation.override("zh-hans"):
        assert "图片" in str(conversion.error_message)
    assert model_api.stats["requests"] == 0
    assert not OpenRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_chat_reply_is_refused_while_a_conversion_is_in_flight(
    settings, model_api, shared_dir
):
    """A conversion waiting in the model's queue counts among the owner's
    requests at once, and is let through when the chat reply is refused."""
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    profile = ModelProfile.ensure(VISION_MODEL)
    profile.concurrency_limit = 1
    profile.save(update_fields=["concurrency_limit"])
    conversion = make_conversion(shared_dir, owner=user)
    pool = f"{settings.MODEL_API_BASE_URL}|{VISION_MODEL}"
    held = wait_for_slot(pool, "a-colleague", INTERACTIVE, capacity=1)
    worker = threading.Thread(target=convert_in_worker_thread, args=[conversion])

    try:
        worker.start()
        wait_until_queued(conversion)
        assert OpenRequest.objects.get().kind == "convert"
        _, reply = queue_reply(make_conversation(user), "a question")
        generate_reply(reply.pk)
    finally:
        held.release()
        worker.join(timeout=20)

    reply.refresh_from_db()
    assert reply.error_code == "quota_concurrent"
    assert reply.error_params == {"limit": 1, "open": 1}
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE
    assert not OpenRequest.objects.exists()


@pytest.mark.parametrize(("server_error", "status"), [(False, "done"), (True, "error")])
def test_it_leaves_no_open_request_once_a_conversion_ends(
    model_api, shared_dir, server_error, status
):
    if server_error:
        model_api.queue_error(500, "CUDA out of memory", "server_error")
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    conversion = make_conversion(shared_dir, owner=user)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.status == status
    assert model_api.stats["requests"] == 1
    assert not OpenRequest.objects.exists()


def convert_in_worker_thread(conversion):
    try:
        convert_image(conversion.pk)
    finally:
        # As a Celery worker does after each task.
        connections.close_all()


def wait_until_queued(conversion):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conversion.refresh_from_db()
        if conversion.queue_position:
            return
        time.sleep(0.05)
    raise AssertionError(f"conversion {conversion.pk} never queued")
