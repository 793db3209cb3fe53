"""The optional offline formula engine, on the real network when installed.

Tests marked `needs_engine` run the network itself (requirements-ocr.txt);
without it they are skipped, unless REQUIRE_OFFLINE_ENGINE=1 (CI) turns its
absence into a failure. The network is loaded once per test process.
"""

import importlib.util
import json
import os
import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.urls import reverse
from django.utils import translation

from academic import ocr_engine
from academic.convert_views import conversion_data
from academic.imaging import normalise
from academic.models import Conversion
from academic.tasks import OFFLINE_POOL, convert_image
from assistant.admission import INTERACTIVE, wait_for_slot
from assistant.models import UsageRecord
from tests.factories import make_user

VISION_MODEL = "qwen2.5-vl-sim"
# Plain formulas it reads right, and the same display formula on a
# transparent and on a dark background, which need imaging's steps.
SCORED_IMAGES = [
    "images/f01.png",
    "images/f16.png",
    "images/variants/f16_transparent.png",
    "images/variants/f16_dark.png",
]
# Long enough that a busy machine does not cut the scored readings short;
# the default limit has its own test.
GENEROUS_SECONDS = 120.0


@pytest.fixture(scope="session")
def engine():
    if not ocr_engine.is_available():
        message = "the offline formula engine is not installed"
        if os.environ.get("REQUIRE_OFFLINE_ENGINE") == "1":
            pytest.fail(message)
        pytest.skip(message + " (pip install -r requirements-ocr.txt)")
    return ocr_engine.load()


@pytest.fixture
def offline(settings, engine):
    settings.IMG2TEX_ENGINE = "auto"
    settings.IMG2TEX_OFFLINE_TIME_LIMIT = GENEROUS_SECONDS
    return engine


def eval_png(shared_dir, name):
    return normalise((shared_dir / "img2latex-eval" / name).read_bytes()).png


def load_scorer(shared_dir):
    path = shared_dir / "img2latex-eval" / "score.py"
    spec = importlib.util.spec_from_file_location("eval_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ground_truth(shared_dir):
    path = shared_dir / "img2latex-eval" / "ground_truth.jsonl"
    with open(path, encoding="utf-8") as rows:
        return {row["file"]: row for row in map(json.loads, rows)}


def make_conversion(shared_dir, name="images/f16.png", kind="formula"):
    image = normalise((shared_dir / "img2latex-eval" / name).read_bytes())
    return Conversion.objects.create(
        owner=make_user(),
        kind=kind,
        target="latex",
        image=image.png,
        image_width=image.width,
        image_height=image.height,
        model=VISION_MODEL,
    )


# Without the network --------------------------------------------------------


def test_it_sees_a_decoding_loop_in_a_repeating_tail():
    loop = list(b"x^{2}+") + list(b"\\mathscr{A}") * 5

    assert ocr_engine.repeating_tail(loop)
    assert ocr_engine.repeating_tail([7] * 48)
    assert not ocr_engine.repeating_tail([7] * 47)


def test_it_lets_a_formula_repeat_short_pieces():
    matrix_row = list(b"\\begin{pmatrix}1 & 0 & 0 \\\\ 0 & 1 & 0 \\\\ 0 & 0 & 1")

    assert not ocr_engine.repeating_tail(matrix_row)
    assert not ocr_engine.repeating_tail(list(b"a+b+c+d+e+f+g"))


@pytest.mark.parametrize(
    ("written", "source"),
    [
        (r"\begin{align*}b^2-4ac=0\end{align*}", "b^2-4ac=0"),
        (r"\[\mathrm{cl}(X)\]", r"\mathrm{cl}(X)"),
        (r"$$a+b$$", "a+b"),
        (r"\begin{equation*}x\end{equation*}", "x"),
        (
            r"\begin{align*}a&=b\\c&=d\end{align*}",
            r"\begin{align*}a&=b\\c&=d\end{align*}",
        ),
    ],
)
def test_it_strips_the_wrappers_the_network_writes(written, source):
    assert ocr_engine.clean_source(written) == source


# The network itself ---------------------------------------------------------


def test_it_reads_plain_formulas_of_the_shared_set_above_a_floor(engine, shared_dir):
    scorer = load_scorer(shared_dir)
    truth = ground_truth(shared_dir)

    scores = []
    for name in SCORED_IMAGES:
        reading = ocr_engine.read_formula(
            eval_png(shared_dir, name), time_limit=GENEROUS_SECONDS
        )
        scores.append(scorer.formula_scores(reading.source, truth[name]["latex"]))

    exact = sum(score["exact"] for score in scores) / len(scores)
    ned_char = sum(score["ned_char"] for score in scores) / len(scores)
    # All four were right when measured; one may slip on another CPU build.
    assert exact >= 0.75, scores
    assert ned_char <= 0.15, scores


def test_it_stops_at_the_time_limit(engine, shared_dir):
    reading = ocr_engine.read_formula(
        eval_png(shared_dir, "images/f01.png"), time_limit=0
    )

    assert reading.doubt == ocr_engine.TIMEOUT
    assert reading.tokens == 0
    assert reading.seconds < 5


def test_it_stops_at_the_length_limit(engine, shared_dir):
    reading = ocr_engine.read_formula(
        eval_png(shared_dir, "images/f01.png"),
        max_tokens=6,
        time_limit=GENEROUS_SECONDS,
    )

    assert reading.doubt == ocr_engine.LENGTH
    assert reading.tokens == 6
    assert reading.doubtful


def test_it_doubts_its_reading_of_a_tiny_crop(engine, shared_dir):
    """The 16-pixel crop of f16, scaled up by imaging, sends it into a loop."""
    png = eval_png(shared_dir, "images/variants/f16_tiny.png")

    reading = ocr_engine.read_formula(png, time_limit=GENEROUS_SECONDS)

    assert reading.doubtful
    assert reading.doubt in (ocr_engine.REPETITION, ocr_engine.UNSURE)


def test_it_doubts_a_structured_formula(engine, shared_dir):
    png = eval_png(shared_dir, "images/f37.png")

    reading = ocr_engine.read_formula(png, time_limit=GENEROUS_SECONDS)

    assert reading.doubt == ocr_engine.STRUCTURED
    assert "\\begin{" in reading.source


def test_its_step_by_step_decoder_matches_the_package_s_full_one(engine, shared_dir):
    import torch

    pixels = ocr_engine._pixels(eval_png(shared_dir, "images/f01.png"), engine.config)
    with torch.inference_mode():
        memory = engine.network.encode(pixels)
        decoder = ocr_engine.IncrementalDecoder(engine.network, memory)
        sequence = [engine.tokenizer.bos_id]
        for _ in range(12):
            step_logits = decoder.step(sequence[-1])
            full_logits = engine.network.decode(torch.tensor([sequence]), memory)
            assert torch.allclose(step_logits, full_logits[0, -1], atol=1e-4)
            sequence.append(int(torch.argmax(step_logits)))


def test_it_reads_in_two_threads_at_once_as_in_one(engine, shared_dir):
    """Worker threads share the network; inference only reads the weights."""
    pngs = [
        eval_png(shared_dir, "images/f01.png"),
        eval_png(shared_dir, "images/f14.png"),
    ]
    alone = [ocr_engine.read_formula(png, time_limit=GENEROUS_SECONDS) for png in pngs]

    together = [None, None]

    def read(index):
        together[index] = ocr_engine.read_formula(
            pngs[index], time_limit=GENEROUS_SECONDS
        )

    threads = [threading.Thread(target=read, args=[index]) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * GENEROUS_SECONDS)

    assert [r.source for r in together] == [r.source for r in alone]


def test_its_system_check_wants_the_extra_for_offline_only(settings):
    from academic.apps import check_offline_engine

    settings.IMG2TEX_ENGINE = "offline"

    errors = check_offline_engine(None)

    expected = [] if ocr_engine.is_available() else ["academic.E001"]
    assert [error.id for error in errors] == expected


def test_it_loads_the_network_once(engine):
    assert ocr_engine.load() is engine


# Conversions through the task -----------------------------------------------


@pytest.mark.django_db
def test_it_answers_a_plain_formula_without_the_vision_model(
    offline, model_api, shared_dir
):
    conversion = make_conversion(shared_dir)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE
    assert conversion.engine == Conversion.Engine.OFFLINE
    assert conversion.doubt == ""
    assert r"\mathrm{cl}" in conversion.source
    assert model_api.stats["requests"] == 0
    [record] = UsageRecord.objects.all()
    assert record.model == ocr_engine.MODEL_NAME
    assert record.kind == "convert"
    assert record.end_state == "stop"
    assert record.completion_tokens == conversion.completion_tokens > 0
    assert record.duration_ms > 0


@pytest.mark.django_db
def test_it_hands_a_doubtful_reading_to_the_vision_model(
    settings, offline, model_api, shared_dir
):
    settings.IMG2TEX_OFFLINE_TIME_LIMIT = 0
    conversion = make_conversion(shared_dir)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.engine == Conversion.Engine.VISION
    assert conversion.source == r"\frac{a+b}{2} \geq \sqrt{ab}"
    assert conversion.doubt == ""
    records = {r.model: r for r in UsageRecord.objects.all()}
    assert records[ocr_engine.MODEL_NAME].end_state == "incomplete"
    assert records[ocr_engine.MODEL_NAME].error_code == "timeout"
    assert records[VISION_MODEL].end_state == "stop"


@pytest.mark.django_db
def test_it_keeps_a_doubtful_reading_when_offline_only(
    settings, offline, model_api, shared_dir
):
    settings.IMG2TEX_ENGINE = "offline"
    settings.IMG2TEX_OFFLINE_MAX_TOKENS = 6
    conversion = make_conversion(shared_dir)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE
    assert conversion.engine == Conversion.Engine.OFFLINE
    assert conversion.doubt == ocr_engine.LENGTH
    assert len(conversion.source) <= 6
    assert model_api.stats["requests"] == 0
    record = UsageRecord.objects.get()
    assert (record.end_state, record.error_code) == ("length_in_answer", "")
    with translation.override("zh-hans"):
        data = conversion_data(conversion)
    assert "置信度低" in data["lowConfidence"]
    assert ocr_engine.MODEL_NAME in data["answeredBy"]


@pytest.mark.django_db
def test_it_keeps_the_doubtful_reading_when_the_vision_model_fails(
    settings, offline, model_api, shared_dir
):
    settings.IMG2TEX_OFFLINE_MAX_TOKENS = 6
    model_api.queue_error(500, "CUDA out of memory", "server_error")
    conversion = make_conversion(shared_dir)

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE
    assert conversion.engine == Conversion.Engine.OFFLINE
    assert conversion.doubt == ocr_engine.LENGTH
    vision_record = UsageRecord.objects.get(model=VISION_MODEL)
    assert vision_record.error_code == "server_error"


@pytest.mark.django_db
def test_it_sends_tables_to_the_vision_model(offline, model_api, shared_dir):
    conversion = make_conversion(shared_dir, "images/t01.png", kind="table")

    convert_image(conversion.pk)

    conversion.refresh_from_db()
    assert conversion.engine == Conversion.Engine.VISION
    assert not UsageRecord.objects.filter(model=ocr_engine.MODEL_NAME).exists()


@pytest.mark.django_db(transaction=True)
def test_it_waits_for_the_engine_s_own_pool(settings, offline, model_api, shared_dir):
    settings.QUEUE_TIMEOUT = 1.0
    conversion = make_conversion(shared_dir)
    held = wait_for_slot(OFFLINE_POOL, "someone-else", INTERACTIVE, capacity=1)

    def run_in_worker_thread():
        try:
            convert_image(conversion.pk)
        finally:
            # As a Celery worker does after each task.
            connections.close_all()

    worker = threading.Thread(target=run_in_worker_thread)
    try:
        worker.start()
        worker.join(timeout=30)
    finally:
        held.release()

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.ERROR
    assert conversion.error_code == "queue_timeout"
    [record] = UsageRecord.objects.all()
    assert record.model == ocr_engine.MODEL_NAME
    assert record.error_code == "queue_timeout"
    assert model_api.stats["requests"] == 0


# The page with the offline engine and no vision model -----------------------


@pytest.fixture
def offline_only(offline, model_api, client):
    from assistant.models import ModelProfile

    ModelProfile.ensure(VISION_MODEL)
    ModelProfile.objects.update(supports_vision=False)
    user = make_user()
    client.force_login(user)
    return user


def upload(client, shared_dir, kind):
    name = "images/f16.png" if kind == "formula" else "images/t01.png"
    image = (shared_dir / "img2latex-eval" / name).read_bytes()
    form = {"kind": kind, "target": "latex", "wrapper": "none"}
    form["image"] = SimpleUploadedFile("shot.png", image, "image/png")
    return client.post(reverse("academic-convert-create"), form)


@pytest.mark.django_db
def test_it_converts_formulas_with_no_vision_model(
    client, offline_only, shared_dir, django_capture_on_commit_callbacks
):
    page = client.get(reverse("academic-convert"))
    with django_capture_on_commit_callbacks() as callbacks:
        response = upload(client, shared_dir, "formula")

    assert page.context["page_data"]["noVisionModel"] == ""
    assert response.status_code == 201
    assert len(callbacks) == 1
    conversion = Conversion.objects.get(owner=offline_only)
    assert conversion.model == ""
    convert_image(conversion.pk)
    status = client.get(reverse("academic-convert-status", args=[conversion.pk]))
    data = status.json()
    assert data["status"] == "done"
    assert data["engine"] == "offline"
    assert "离线公式引擎" in data["answeredBy"]


@pytest.mark.django_db
def test_it_refuses_a_table_with_no_vision_model(client, offline_only, shared_dir):
    response = upload(client, shared_dir, "table")

    assert response.status_code == 400
    assert "视觉模型" in response.json()["error"]
    assert not Conversion.objects.exists()
