from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.http import require_GET, require_POST

from academic import reading
from academic.generation import keep_reason
from academic.models import Paper, PaperPart
from academic.reading_forms import PaperForm
from academic.reading_tasks import start_reading
from academic.refs import render_with_refs
from assistant.catalog import offered_models
from assistant.models import ModelProfile
from chat import actions as chat_actions

RECENT_PAPERS = 20
PAPER_FAILURES = {
    "nothing_read": _lazy("No part of the paper could be read."),
    **reading.PART_FAILURES,
}


def _get_paper_for_user(request, pk):
    return get_object_or_404(Paper, pk=pk, owner=request.user)


def failure_reason(code):
    if code in PAPER_FAILURES:
        return PAPER_FAILURES[code]
    return keep_reason(code)


@login_required
def home(request):
    form = PaperForm(
        request.POST or None, request.FILES or None, models=offered_models()
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        fields = {
            "title": (data["title"] or data["file_name"])[:200],
            "file_name": data["file_name"],
            "source_kind": data["source_kind"],
            "model": data["model"],
            "language": get_language() or "zh-hans",
            "missing_inputs": data["missing_inputs"],
        }
        profile = ModelProfile.ensure(data["model"])
        with transaction.atomic():
            paper = reading.store_paper(request.user, fields, data["sections"], profile)
            start_reading(paper)
        return redirect(paper)

    context = {"form": form, "papers": request.user.papers.all()[:RECENT_PAPERS]}
    status = 400 if form.is_bound and form.errors else 200
    return render(request, "academic/reading_home.html", context, status=status)


@login_required
@require_GET
def paper(request, pk):
    paper = _get_paper_for_user(request, pk)
    sections = list(paper.sections.all())
    page_count = max((p for s in sections for p in _pages(s)), default=0)
    failed = paper.parts.filter(status=PaperPart.Status.FAILED).select_related(
        "section"
    )
    context = {
        "paper": paper,
        "sections": _sections_view(sections),
        "summary_html": render_with_refs(paper.summary, sections, page_count),
        "failed_parts": [
            {
                "refs": ", ".join(reading.part_refs(part, part.section)),
                "reason": failure_reason(part.failure_code),
            }
            for part in failed
        ],
        "failure": failure_reason(paper.failure_code) if paper.failure_code else "",
        "page_data": {
            "statusUrl": reverse("academic-paper-status", args=[paper.pk]),
            "running": paper.is_running,
        },
    }
    return render(request, "academic/reading_paper.html", context)


def _pages(section):
    return [block["page"] for block in section.blocks if block.get("page")]


def _sections_view(sections):
    """Each section with its blocks; a page's first block carries its anchor."""
    seen_pages = set()
    views = []
    for section in sections:
        blocks = []
        for block in section.blocks:
            page = block.get("page")
            anchor = f"page-{page}" if page and page not in seen_pages else ""
            seen_pages.add(page)
            blocks.append({"page": page, "text": block["text"], "anchor": anchor})
        views.append({"section": section, "blocks": blocks})
    return views


@login_required
@require_GET
def status(request, pk):
    """Progress small enough to ask for every second: "part 3 of 12"."""
    paper = _get_paper_for_user(request, pk)
    finished, total = paper.progress()
    if paper.status == Paper.Status.READING:
        text = _("Reading part %(current)s of %(total)s") % {
            "current": min(finished + 1, total),
            "total": total,
        }
    else:
        text = paper.get_status_display()
    return JsonResponse(
        {
            "status": paper.status,
            "finished": finished,
            "total": total,
            "text": text,
            "running": paper.is_running,
        }
    )


@login_required
@require_POST
def ask(request, pk):
    """Open the paper's conversation, starting it on the first visit."""
    paper = _get_paper_for_user(request, pk)
    if paper.conversation is None or paper.conversation.deleted_at is not None:
        title = _("About: %(title)s") % {"title": paper.title or paper.file_name}
        conversation = chat_actions.start_conversation(request.user, paper.model, title)
        paper.conversation = conversation
        paper.save(update_fields=["conversation"])
    return redirect(paper.conversation)


@login_required
@require_POST
def cancel(request, pk):
    paper = _get_paper_for_user(request, pk)
    reading.cancel_paper(paper)
    return redirect(paper)
