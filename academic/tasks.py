import logging
import time
from contextlib import contextmanager

from celery import shared_task
from django.conf import settings

from academic import actions, img2tex, ocr_engine
from academic.code_tasks import summarise_part, write_overview  # noqa: F401
from academic.generation import ChunkWriter
from academic.models import Conversion, PolishChunk
from assistant import metering, quotas
from assistant.admission import INTERACTIVE, TimedOut, wait_for_slot
from assistant.completion import pool_name
from assistant.models import ModelProfile

# What an image costs against a quota before the server says: a formula
# crop is a few hundred tokens to a vision model, a table more.
IMAGE_PROMPT_ESTIMATE = 1000
# The offline engine's admission pool: one per deployment, since its
# capacity is CPU cores, not a backend's slots.
OFFLINE_POOL = f"offline|{ocr_engine.MODEL_NAME}"
# How an offline reading cut short ends in its usage record.
OFFLINE_END_STATES = {
    ocr_engine.LENGTH: "length_in_answer",
    ocr_engine.TIMEOUT: "incomplete",
}

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def convert_image(conversion_id):
    """Read the source of conversion `conversion_id` from its picture.

    Skips a conversion deleted meanwhile or no longer queued (a duplicate
    delivery). A formula goes to the offline engine first when it is
    enabled (academic.ocr_engine), and on to the vision model when that
    reading is doubtful and IMG2TEX_ENGINE is "auto"; everything else goes
    to the vision model. Each engine's request counts among the owner's
    requests at once while it waits and runs (one over the quota is
    refused), waits in its own pool of the same fair admission queue as
    chat, as interactive work of the owner, and leaves its own usage
    record. One call holds one worker thread for at most the offline time
    limit plus REQUEST_TIMEOUT_SECONDS, after its waits in the queue.
    """
    try:
        conversion = Conversion.objects.get(pk=conversion_id)
    except Conversion.DoesNotExist:
        logger.info("conversion %s was deleted before it ran", conversion_id)
        return

    if conversion.status != Conversion.Status.QUEUED:
        logger.warning("conversion %s is %s; skipped", conversion_id, conversion.status)
        return

    try:
        _convert(conversion)
    except img2tex.ConversionFailed as failure:
        logger.warning(
            "conversion %s failed: %s %s", conversion_id, failure.code, failure.detail
        )
        conversion.fail(failure.code, failure.detail)
    except Exception as exc:  # noqa: BLE001 - a conversion must end either way
        logger.exception("conversion %s broke", conversion_id)
        conversion.fail("internal", exc.__class__.__name__)


def _convert(conversion):
    offline = None
    if conversion.kind == Conversion.Kind.FORMULA and ocr_engine.enabled():
        offline = _read_offline(conversion)
        if not _wants_vision_model(conversion, offline):
            _finish_offline(conversion, offline)
            return
        logger.info(
            "conversion %s: offline reading doubtful (%s), asking %s",
            conversion.pk,
            offline.doubt,
            conversion.model,
        )

    if not conversion.model:
        raise img2tex.ConversionFailed("no_vision_model")
    try:
        transcription = _ask_vision_model(conversion)
    except img2tex.ConversionFailed as failure:
        if offline is None or not offline.source:
            raise
        # The doubtful reading is still the best answer there is; a failed
        # second opinion must not lose it.
        logger.warning(
            "conversion %s: %s failed (%s); keeping the doubtful offline reading",
            conversion.pk,
            conversion.model,
            failure.code,
        )
        _finish_offline(conversion, offline)
        return
    conversion.finish(transcription, engine=Conversion.Engine.VISION)


def _wants_vision_model(conversion, offline):
    return (
        offline.doubtful
        and settings.IMG2TEX_ENGINE == "auto"
        and bool(conversion.model)
    )


def _finish_offline(conversion, offline):
    if not offline.source:
        raise img2tex.ConversionFailed("offline_empty")

    transcription = img2tex.Transcription(offline.source, 0, offline.tokens)
    conversion.finish(
        transcription, engine=Conversion.Engine.OFFLINE, doubt=offline.doubt
    )


def _read_offline(conversion):
    """The offline engine's OfflineReading, after the quota check and a
    slot in the engine's own admission pool; records its usage either way.
    """
    timings = {}
    reading = None
    error_code = ""
    try:
        reading = _read_offline_in_slot(conversion, timings)
        return reading
    except img2tex.ConversionFailed as failure:
        error_code = failure.code
        raise
    except Exception:
        error_code = "internal"
        raise
    finally:
        _record_offline_usage(conversion, reading, error_code, timings)


def _read_offline_in_slot(conversion, timings):
    # The characters the network may write are its tokens, and count
    # against the quota like a model's.
    with _within_quota(conversion, settings.IMG2TEX_OFFLINE_MAX_TOKENS):
        queued_at = time.monotonic()
        lease = _wait_for_slot(
            conversion, OFFLINE_POOL, settings.IMG2TEX_OFFLINE_CONCURRENCY
        )
        with lease:
            return _run_offline_engine(conversion, timings, queued_at)


def _run_offline_engine(conversion, timings, queued_at):
    started = time.monotonic()
    timings["queue_ms"] = round((started - queued_at) * 1000)
    conversion.mark_running()
    try:
        return ocr_engine.read_formula(
            bytes(conversion.image),
            max_tokens=settings.IMG2TEX_OFFLINE_MAX_TOKENS,
            time_limit=settings.IMG2TEX_OFFLINE_TIME_LIMIT,
            threads=settings.IMG2TEX_OFFLINE_THREADS,
        )
    finally:
        timings["duration_ms"] = round((time.monotonic() - started) * 1000)


def _record_offline_usage(conversion, reading, error_code, timings):
    if reading is None:
        end_state = "error"
    else:
        end_state = OFFLINE_END_STATES.get(reading.doubt, "stop")
    stopped_by_clock = reading is not None and reading.doubt == ocr_engine.TIMEOUT
    metering.record_request(
        user=conversion.owner_id,
        kind="convert",
        model=ocr_engine.MODEL_NAME,
        end_state=end_state,
        # A doubtful reading is an answer, not an error; only running out
        # of time shows with the other timeouts. The worker's log says why
        # a reading was doubtful.
        error_code=error_code or ("timeout" if stopped_by_clock else ""),
        prompt_tokens=0 if reading else None,
        completion_tokens=reading.tokens if reading else None,
        queue_ms=timings.get("queue_ms"),
        duration_ms=timings.get("duration_ms"),
    )


def _ask_vision_model(conversion):
    """The vision model's Transcription; records its usage either way."""
    timings = {}
    transcription = None
    error_code = ""
    try:
        transcription = _transcribe_in_slot(conversion, timings)
        return transcription
    except img2tex.ConversionFailed as failure:
        error_code = failure.code
        raise
    except Exception:
        error_code = "internal"
        raise
    finally:
        _record_vision_usage(conversion, transcription, error_code, timings)


def _record_vision_usage(conversion, transcription, error_code, timings):
    sent = "duration_ms" in timings
    metering.record_request(
        user=conversion.owner_id,
        kind="convert",
        model=conversion.model,
        end_state="error" if error_code else "stop",
        error_code=error_code,
        prompt_tokens=transcription.prompt_tokens if transcription else None,
        completion_tokens=transcription.completion_tokens if transcription else None,
        estimated_prompt_tokens=IMAGE_PROMPT_ESTIMATE if sent else None,
        queue_ms=timings.get("queue_ms"),
        duration_ms=timings.get("duration_ms"),
    )


def _transcribe_in_slot(conversion, timings):
    profile = ModelProfile.ensure(conversion.model)
    with _within_quota(conversion, IMAGE_PROMPT_ESTIMATE):
        queued_at = time.monotonic()
        lease = _wait_for_slot(
            conversion, pool_name(conversion.model), profile.concurrency_limit
        )
        with lease:
            return _run_vision_model(conversion, profile, timings, queued_at)


def _run_vision_model(conversion, profile, timings, queued_at):
    sent_at = time.monotonic()
    timings["queue_ms"] = round((sent_at - queued_at) * 1000)
    conversion.mark_running()
    try:
        return img2tex.transcribe(
            bytes(conversion.image),
            conversion.model,
            conversion.kind,
            conversion.target,
            max_output_tokens=profile.max_output_tokens,
        )
    finally:
        timings["duration_ms"] = round((time.monotonic() - sent_at) * 1000)


@contextmanager
def _within_quota(conversion, needed_tokens):
    """Admit one engine's request under the owner's quotas, or refuse it.

    For as long as the block runs the request is one of the owner's
    requests at once (an OpenRequest row), which chat, the API and batch
    work count; their open chat replies and their requests that started
    before this one go first. A person is waiting for the answer, so a
    request over the limit is refused, as a chat reply is, rather than held.
    """
    with quotas.open_request(conversion.owner_id, "convert") as in_flight:
        refusal = quotas.check_quota(
            conversion.owner_id,
            needed_tokens,
            count_open=lambda: quotas.requests_ahead(in_flight),
        )
        if refusal is not None:
            raise img2tex.ConversionFailed(refusal.code, _figures(refusal.params))
        yield


def _figures(params):
    return ", ".join(f"{name} {value}" for name, value in params.items())


def _wait_for_slot(conversion, pool, capacity):
    def tell_position(position, eta):
        if position != conversion.queue_position:
            conversion.set_queue_position(position)

    try:
        return wait_for_slot(
            pool=pool,
            user_key=str(conversion.owner_id),
            priority=INTERACTIVE,
            capacity=capacity,
            on_wait=tell_position,
            timeout=settings.QUEUE_TIMEOUT,
        )
    except TimedOut:
        raise img2tex.ConversionFailed("queue_timeout") from None


@shared_task(ignore_result=True)
def polish_chunk(chunk_id):
    """Polish, check or translate the chunk `chunk_id`, then close its job
    and run the compile check if it was the last one.

    A chunk deleted with its job, or no longer queued (a duplicate delivery,
    a cancelled job), is skipped. One call holds one worker thread while the
    chunk waits for a slot and while the model writes.
    """
    try:
        chunk = PolishChunk.objects.select_related("job", "file").get(pk=chunk_id)
    except PolishChunk.DoesNotExist:
        logger.info("chunk %s was deleted before it could be polished", chunk_id)
        return

    if chunk.status != PolishChunk.Status.QUEUED:
        logger.info("chunk %s is %s, not queued; skipped", chunk_id, chunk.status)
    else:
        ChunkWriter(chunk).run()

    if chunk.job.finish_if_complete():
        actions.check_compiles(chunk.job)


# The paper-reading tasks live with their module; importing them here lets
# Celery's autodiscovery, which looks only at tasks.py, register them.
from academic.reading_tasks import read_paper_part  # noqa: E402, F401
