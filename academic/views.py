import json
from pathlib import Path
from urllib.parse import quote

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.http import require_GET, require_POST

from academic import actions, project
from academic.encoding import EncodingProblem, encode_text
from academic.forms import PolishForm
from academic.generation import keep_reason, not_processed_reason
from academic.models import PolishChunk, PolishJob
from assistant.catalog import offered_models

RECENT_JOBS = 20
DEFAULT_SUFFIX = {
    PolishJob.SourceKind.PLAIN: ".txt",
    PolishJob.SourceKind.MARKDOWN: ".md",
    PolishJob.SourceKind.LATEX: ".tex",
}


def _get_job_for_user(request, pk):
    # A project's archive (up to 20 MB) is loaded only where it is used.
    jobs = PolishJob.objects.defer("archive")
    return get_object_or_404(jobs, pk=pk, owner=request.user)


@login_required
def home(request):
    models = offered_models()
    # Other pages (the image converter) open the form with their text in it.
    initial = {"text": request.GET.get("text", "")}
    form = PolishForm(
        request.POST or None, request.FILES or None, models=models, initial=initial
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        fields = {
            name: data[name]
            for name in ("task", "preset", "glossary", "model", "thinking", "file_name")
        }
        job = actions.start_job(
            request.user,
            data["documents"],
            fields,
            archive=data.get("archive"),
            not_processed=data.get("not_processed", ()),
        )
        return redirect(job)

    context = {
        "form": form,
        "jobs": request.user.polish_jobs.defer("archive")[:RECENT_JOBS],
        # The form's script shows the thinking switch for these models only.
        "thinking_models": [p.name for p in models if p.can_switch_thinking],
    }
    return render(request, "academic/home.html", context, status=_form_status(form))


def _form_status(form):
    return 400 if form.is_bound and form.errors else 200


@login_required
@require_GET
def job(request, pk):
    job = _get_job_for_user(request, pk)
    files = list(job.files.all())
    context = {
        "job": job,
        "files": files,
        "offer_utf8": any(f.encoding != "utf-8" or f.has_bom for f in files),
        "compile": compile_data(job),
        "not_processed": [
            {"path": item["path"], "reason": not_processed_reason(item["reason"])}
            for item in job.not_processed
        ],
        "page_data": {
            "statusUrl": reverse("academic-job-status", args=[job.pk]),
            "chunksUrl": reverse("academic-job-chunks", args=[job.pk]),
            "decideUrl": reverse("academic-decide", args=[job.pk]),
            "multiFile": len(files) > 1,
            "strings": _ui_strings(),
        },
    }
    return render(request, "academic/job.html", context)


@login_required
@require_GET
def job_status(request, pk):
    """The job's progress, small enough to ask for every second."""
    job = _get_job_for_user(request, pk)
    finished, total = job.progress()
    chunks = job.chunks.values_list("pk", "status")
    return JsonResponse(
        {
            "status": job.status,
            "finished": finished,
            "total": total,
            "queuePosition": cache.get(job.queue_key) if job.is_running else None,
            "chunks": [{"id": pk, "status": status} for pk, status in chunks],
            "compile": compile_data(job),
        }
    )


COMPILE_MESSAGES = {
    PolishJob.CompileStatus.PENDING: _lazy(
        "The compile check runs once every part is done."
    ),
    PolishJob.CompileStatus.RUNNING: _lazy("Compiling the original and the result…"),
    PolishJob.CompileStatus.OK: _lazy(
        "The result compiles with %(engine)s, as the original does."
    ),
    PolishJob.CompileStatus.BROKEN: _lazy(
        "The result no longer compiles with %(engine)s. Errors the original does "
        "not have:"
    ),
    PolishJob.CompileStatus.ORIGINAL_FAILS: _lazy(
        "The original does not compile here either (a class, package or file is "
        "missing), so the compile check cannot judge the result."
    ),
    PolishJob.CompileStatus.SKIPPED: _lazy(
        "TeX is not installed here: the compile check was skipped; the structural "
        "checks ran."
    ),
    PolishJob.CompileStatus.NOT_A_DOCUMENT: _lazy(
        "Not a whole document (no \\documentclass): the compile check was skipped."
    ),
}


def compile_data(job):
    """The compile check's state as the page shows it, or None for non-LaTeX."""
    message = COMPILE_MESSAGES.get(job.compile_status)
    if message is None:
        return None
    return {
        "status": job.compile_status,
        "message": str(message) % {"engine": job.compile_engine},
        "errors": job.compile_errors,
    }


@login_required
@require_GET
def job_chunks(request, pk):
    """The review data of the finished chunks named in ?ids=1,2,3."""
    job = _get_job_for_user(request, pk)
    try:
        ids = [int(value) for value in request.GET.get("ids", "").split(",") if value]
    except ValueError:
        return HttpResponseBadRequest("ids must be numbers")

    decisions = job.decisions_by_chunk()
    chunks = job.chunks.filter(pk__in=ids).select_related("file")
    return JsonResponse(
        {"chunks": [chunk_data(chunk, decisions.get(chunk.pk, {})) for chunk in chunks]}
    )


def chunk_data(chunk, decisions):
    """A chunk as the review page's script draws it."""
    data = {
        "id": chunk.pk,
        "position": chunk.position,
        "file": chunk.file.path,
        "status": chunk.status,
        "original": chunk.original_text,
        "changes": [],
    }
    if chunk.status == PolishChunk.Status.KEPT:
        data["reason"] = str(keep_reason(chunk.failure_code))
        data["detail"] = chunk.failure_detail
    for change in chunk.changes():
        data["changes"].append(
            {
                "index": change.index,
                "start": change.start,
                "end": change.end,
                "replacement": change.replacement,
                "accepted": decisions.get(change.index, True),
            }
        )
    return data


@login_required
@require_POST
def decide(request, pk):
    """Accept or reject one change ({"chunk", "change", "accepted"}) or all
    of them ({"all": true|false})."""
    job = _get_job_for_user(request, pk)
    try:
        body = json.loads(request.body)
        if "all" in body:
            actions.decide_all(job, bool(body["all"]))
        else:
            chunk = get_object_or_404(job.chunks, pk=int(body["chunk"]))
            actions.decide(chunk, int(body["change"]), bool(body["accepted"]))
    except (ValueError, KeyError, TypeError):
        return HttpResponseBadRequest("expected chunk, change and accepted, or all")
    return JsonResponse({"ok": True})


@login_required
@require_POST
def cancel(request, pk):
    job = _get_job_for_user(request, pk)
    actions.cancel_job(job)
    return redirect(job)


@login_required
@require_GET
def download(request, pk):
    """The merged document, in the file's own encoding or, with ?utf8=1, UTF-8."""
    job = _get_job_for_user(request, pk)
    as_utf8 = request.GET.get("utf8") == "1"
    try:
        encoded = {
            polish_file: encode_text(text, polish_file.decoded_source(), as_utf8)
            for polish_file, text in job.merged_texts().items()
        }
    except EncodingProblem as problem:
        messages.error(request, problem.message)
        return redirect(job)

    if job.is_project:
        replaced = {polish_file.path: body for polish_file, body in encoded.items()}
        members = project.read_members(bytes(job.archive))
        body = project.write_archive(members, replaced)
        content_type = "application/zip"
    else:
        ((polish_file, body),) = encoded.items()
        charset = "utf-8" if as_utf8 else polish_file.encoding
        content_type = f"text/plain; charset={charset}"
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = _attachment(_download_name(job))
    return response


def _download_name(job):
    if job.file_name:
        return job.file_name
    return "polished" + DEFAULT_SUFFIX[job.files.get().source_kind]


def _attachment(name):
    # An ASCII fallback for old clients, the real name (often Chinese) in
    # RFC 6266's filename*.
    fallback = "document" + (Path(name).suffix or ".txt")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"


def _ui_strings():
    return {
        "queued": _("Waiting for the model…"),
        "queuePosition": _("Queued for the model: position %(position)s"),
        "progress": _("Parts done: %(finished)s of %(total)s"),
        "notChanged": _("Not changed: %(reason)s"),
        "accept": _("Accept"),
        "reject": _("Reject"),
        "pending": _("Not done yet"),
        "saveFailed": _("Your decision could not be saved. Check the connection."),
        "status.running": _("Running"),
        "status.done": _("Done"),
        "status.cancelled": _("Cancelled"),
    }
