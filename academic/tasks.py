import logging
import time

from celery import shared_task
from django.conf import settings

from academic import actions, img2tex
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

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def convert_image(conversion_id):
    """Read the source of conversion `conversion_id` from its picture.

    Skips a conversion deleted meanwhile or no longer queued (a duplicate
    delivery). Waits in the same fair admission queue as chat, as
    interactive work of the owner, and holds one worker thread for the
    request, which REQUEST_TIMEOUT_SECONDS bounds.
    """
    try:
        conversion = Conversion.objects.get(pk=conversion_id)
    except Conversion.DoesNotExist:
        logger.info("conversion %s was deleted before it ran", conversion_id)
        return

    if conversion.status != Conversion.Status.QUEUED:
        logger.warning("conversion %s is %s; skipped", conversion_id, conversion.status)
        return

    timings = {}
    error_code = ""
    try:
        _convert(conversion, timings)
    except img2tex.ConversionFailed as failure:
        logger.warning(
            "conversion %s failed: %s %s", conversion_id, failure.code, failure.detail
        )
        conversion.fail(failure.code, failure.detail)
        error_code = failure.code
    except Exception as exc:  # noqa: BLE001 - a conversion must end either way
        logger.exception("conversion %s broke", conversion_id)
        conversion.fail("internal", exc.__class__.__name__)
        error_code = "internal"
    _record_usage(conversion, error_code, timings)


def _record_usage(conversion, error_code, timings):
    sent = "duration_ms" in timings
    metering.record_request(
        user=conversion.owner_id,
        kind="convert",
        model=conversion.model,
        end_state="error" if error_code else "stop",
        error_code=error_code,
        prompt_tokens=conversion.prompt_tokens,
        completion_tokens=conversion.completion_tokens,
        estimated_prompt_tokens=IMAGE_PROMPT_ESTIMATE if sent else None,
        queue_ms=timings.get("queue_ms"),
        duration_ms=timings.get("duration_ms"),
    )


def _convert(conversion, timings):
    profile = ModelProfile.ensure(conversion.model)
    refusal = quotas.check_quota(
        conversion.owner_id, IMAGE_PROMPT_ESTIMATE, count_open=lambda: 0
    )
    if refusal is not None:
        raise img2tex.ConversionFailed(refusal.code)

    queued_at = time.monotonic()
    lease = _wait_for_slot(conversion, profile)
    with lease:
        sent_at = time.monotonic()
        timings["queue_ms"] = round((sent_at - queued_at) * 1000)
        conversion.mark_running()
        try:
            transcription = img2tex.transcribe(
                bytes(conversion.image),
                conversion.model,
                conversion.kind,
                conversion.target,
                max_output_tokens=profile.max_output_tokens,
            )
        finally:
            timings["duration_ms"] = round((time.monotonic() - sent_at) * 1000)
    conversion.finish(transcription)


def _wait_for_slot(conversion, profile):
    def tell_position(position, eta):
        if position != conversion.queue_position:
            conversion.set_queue_position(position)

    try:
        return wait_for_slot(
            pool=pool_name(conversion.model),
            user_key=str(conversion.owner_id),
            priority=INTERACTIVE,
            capacity=profile.concurrency_limit,
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
