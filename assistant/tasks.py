"""Background work of the project package itself: capacity probes from admin."""

import logging

from celery import shared_task
from django.utils import timezone

from assistant import capacity_probe
from assistant.models import CapacityProbeRun

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def run_capacity_probe(run_id):
    """Run one probe queued from admin and keep its table and suggestion.

    The probe sends its requests straight to the server, beside the
    admission queue, because it measures what the server does with a given
    load; its request budget bounds what it costs the users meanwhile.
    """
    # Claimed in one UPDATE, so that a task delivered twice probes once.
    claimed = CapacityProbeRun.objects.filter(
        pk=run_id, status=CapacityProbeRun.Status.QUEUED
    ).update(status=CapacityProbeRun.Status.RUNNING)
    if not claimed:
        logger.warning("capacity probe %s is not queued; skipped", run_id)
        return

    run = CapacityProbeRun.objects.select_related("profile").get(pk=run_id)
    logger.info(
        "capacity probe %s of %s started: concurrency %s x contexts %s, "
        "at most %s requests",
        run.pk, run.profile.name, run.concurrency, run.contexts, run.max_requests,
    )  # fmt: skip

    probe = capacity_probe.Probe(
        model=run.profile.name,
        concurrency=run.concurrency,
        contexts=run.contexts,
        timeout=run.timeout,
        max_requests=run.max_requests,
        progress=lambda text: logger.info("capacity probe %s: %s", run.pk, text),
    )
    try:
        cells = probe.run()
    except Exception as exc:  # noqa: BLE001 - the run records any failure
        logger.exception("capacity probe %s failed", run.pk)
        _finish(
            run, CapacityProbeRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}"
        )
        return

    suggestion = capacity_probe.suggest(cells, probe.timeout)
    run.cells = [cell_figures(cell) for cell in cells]
    run.suggestion = suggestion.profile_fields()
    run.reasons = list(suggestion.reasons)
    run.requests_sent = probe.sent
    _finish(run, CapacityProbeRun.Status.DONE)


def _finish(run, status, error=""):
    run.status = status
    run.error = error
    run.finished = timezone.now()
    run.save()
    logger.info("capacity probe %s ended %s", run.pk, status)


def cell_figures(cell):
    """The columns of the seed's table for one cell, as JSON."""
    errors = [result.error for result in cell.requests if result.error]
    return {
        "context": cell.context,
        "concurrency": cell.concurrency,
        "skipped": cell.skipped,
        "total_rate": None if cell.skipped else round(cell.total_rate, 1),
        "mean_request_rate": _rounded(None if cell.skipped else cell.mean_request_rate),
        "over_timeout": None if cell.skipped else cell.over_timeout,
        "errors": None if cell.skipped else cell.errors,
        "mean_first_token_s": _rounded(
            None if cell.skipped else cell.mean_first_token_s, 2
        ),
        "first_error": errors[0] if errors else "",
    }


def _rounded(value, digits=1):
    return None if value is None else round(value, digits)
