"""The code project analysis pages: upload, the analysis, its progress, a
file's source, Cancel, and the follow-up conversation."""

import re
from html import unescape

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.http import require_GET, require_POST

from academic import code_actions, codebase, codediagram, codemap
from academic.code_models import CodeAnalysis, CodePart
from academic.generation import keep_reason
from academic.project import ProjectProblem
from assistant.catalog import offered_models
from chat.rendering import render_markdown

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
RECENT_ANALYSES = 20
PARSER_NOTES = {
    codemap.TREE_SITTER: _lazy(
        "C/C++ structure read with the tree-sitter C++ grammar (no compiler: "
        "definitions hidden behind macros may be missing)."
    ),
    codemap.OUTLINE: _lazy(
        "C/C++ structure is a plain outline (includes, and functions found by "
        "a pattern): no C++ parser is installed."
    ),
}
ENTRY_KINDS = {
    "main_guard": _lazy("runs as a script"),
    "main_module": _lazy("runs with python -m"),
    "console_script": _lazy("console script"),
    "main_function": _lazy("main function"),
}
# Fenced blocks and code spans of Markdown, whose text stays as written.
CODE_IN_MARKDOWN = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)
# A tag of sanitised HTML, quoted attribute values and all.
HTML_TAG = re.compile(r"""(<(?:[^>"']|"[^"]*"|'[^']*')*>)""")


class CodeUploadForm(forms.Form):
    file = forms.FileField(
        label=_lazy("A project (.zip) or one source file (.py, .c, .cpp, .h, ...)")
    )
    model = forms.ChoiceField(label=_lazy("Model"))

    def __init__(self, *args, models=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(p.name, p.label) for p in models]
        if settings.DEFAULT_MODEL in [profile.name for profile in models]:
            self.fields["model"].initial = settings.DEFAULT_MODEL

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                _("The file is larger than %(limit)s MB."),
                code="size",
                params={"limit": MAX_UPLOAD_BYTES // (1024 * 1024)},
            )
        name = upload.name
        if not name.lower().endswith(".zip") and codebase.language_of(name) not in (
            codebase.PYTHON,
            codebase.CPP,
        ):
            raise forms.ValidationError(
                _("Upload a .zip of a project, or a Python or C/C++ source file."),
                code="suffix",
            )
        try:
            self.cleaned_data["project"] = codebase.read_upload(name, upload.read())
        except ProjectProblem as problem:
            raise forms.ValidationError(problem.message, code="project") from None
        return upload


def _get_analysis_for_user(request, pk):
    return get_object_or_404(CodeAnalysis, pk=pk, owner=request.user)


@login_required
def home(request):
    models = offered_models()
    form = CodeUploadForm(request.POST or None, request.FILES or None, models=models)
    if request.method == "POST" and form.is_valid():
        analysis = code_actions.start_analysis(
            request.user,
            form.cleaned_data["file"].name,
            form.cleaned_data["project"],
            form.cleaned_data["model"],
            get_language() or "zh-hans",
        )
        return redirect(analysis)

    context = {
        "form": form,
        "analyses": request.user.code_analyses.only("name", "status", "created")[
            :RECENT_ANALYSES
        ],
    }
    status = 400 if form.is_bound and form.errors else 200
    return render(request, "academic/code_home.html", context, status=status)


@login_required
@require_GET
def analysis(request, pk):
    analysis = _get_analysis_for_user(request, pk)
    files = list(analysis.files.only("path", "language", "position"))
    paths = {code_file.path for code_file in files}
    finished, _total = analysis.progress()
    diagram, partial = codediagram.render_svg(
        analysis.project_map, lambda path: _source_url(analysis, path)
    )
    context = {
        "analysis": analysis,
        "files": files,
        "modules": analysis.project_map.get("modules", []),
        "entry_points": [
            {**entry, "label": ENTRY_KINDS.get(entry["kind"], entry["kind"])}
            for entry in analysis.project_map.get("entry_points", [])
        ],
        "parser_note": PARSER_NOTES.get(analysis.project_map.get("cpp_parser")),
        "skipped": [
            {"path": item["path"], "reason": codebase.skip_reason(item["reason"])}
            for item in analysis.skipped
        ],
        # Escaped labels and fixed markup (academic.codediagram).
        "diagram": mark_safe(diagram),  # noqa: S308
        "diagram_partial": partial,
        "overview_html": linked_html(analysis, analysis.overview, paths),
        "summaries": _summaries(analysis, paths),
        "overview_failure": keep_reason(analysis.overview_failure)
        if analysis.overview_failure
        else "",
        "page_data": {
            "statusUrl": reverse("academic-code-status", args=[analysis.pk]),
            "finished": finished,
            "strings": {
                "progress": _("Parts done: %(finished)s of %(total)s"),
                "queuePosition": _("Queued for the model: position %(position)s"),
            },
        },
    }
    return render(request, "academic/code_analysis.html", context)


def _summaries(analysis, paths):
    summaries = []
    parts = analysis.parts.select_related("file").only(
        "status", "summary", "failure_code", "first_line", "last_line", "file__path"
    )
    for part in parts:
        summaries.append(
            {
                "path": part.file.path,
                "first_line": part.first_line,
                "last_line": part.last_line,
                "status": part.status,
                "html": linked_html(analysis, part.summary, paths),
                "failure": keep_reason(part.failure_code)
                if part.status == CodePart.Status.FAILED
                else "",
                "url": _source_url(analysis, part.file.path, part.first_line),
            }
        )
    return summaries


def _source_url(analysis, path, line=None):
    url = reverse("academic-code-source", args=[analysis.pk, path])
    return f"{url}#L{line}" if line else url


def linked_html(analysis, text, paths):
    """The model's Markdown as sanitised HTML, its path:line references to
    the project's files turned into links to the source view.

    The links are added after sanitising, to text outside tags and outside
    existing links only: the sanitiser refuses relative links, rightly, in
    anything the model writes itself.
    """
    if not text:
        return ""
    if not paths:
        return mark_safe(render_markdown(text))  # noqa: S308 - sanitised
    longest_first = sorted(paths, key=len, reverse=True)
    html = render_markdown(_quote_references(text, longest_first))
    names = "|".join(re.escape(escape(path)) for path in longest_first)
    reference = re.compile(rf"(?<![\w/.-])({names}):(\d+)(?:-(\d+))?")
    pieces = HTML_TAG.split(html)
    in_link = False
    for index, piece in enumerate(pieces):
        if index % 2:
            if piece.startswith("<a ") or piece == "<a>":
                in_link = True
            elif piece == "</a>":
                in_link = False
            continue
        if not in_link:
            pieces[index] = reference.sub(
                lambda match: _reference_link(analysis, match), piece
            )
    return mark_safe("".join(pieces))  # noqa: S308 - only our own links added


def _quote_references(text, paths):
    """`text` with bare path:line references put in code spans, outside the
    code already there, so that Markdown cannot read the underscores of
    "__init__.py:3" as emphasis."""
    names = "|".join(re.escape(path) for path in paths)
    reference = re.compile(rf"(?<![\w/.`-])(?:{names}):\d+(?:-\d+)?(?![\w`])")
    pieces = CODE_IN_MARKDOWN.split(text)
    for index in range(0, len(pieces), 2):
        pieces[index] = reference.sub(lambda match: f"`{match[0]}`", pieces[index])
    return "".join(pieces)


def _reference_link(analysis, match):
    path = unescape(match[1])
    url = _source_url(analysis, path, int(match[2]))
    return f'<a href="{escape(url)}" data-code-ref>{match[0]}</a>'


@login_required
@require_GET
def status(request, pk):
    """The analysis's progress, small enough to ask for every second."""
    analysis = _get_analysis_for_user(request, pk)
    finished, total = analysis.progress()
    return JsonResponse(
        {
            "status": analysis.status,
            "overview": analysis.overview_status,
            "finished": finished,
            "total": total,
            "queuePosition": cache.get(analysis.queue_key)
            if analysis.is_running
            else None,
        }
    )


@login_required
@require_GET
def source(request, pk, path):
    analysis = _get_analysis_for_user(request, pk)
    code_file = analysis.files.filter(path=path).first()
    if code_file is None:
        raise Http404("no such file in this analysis")
    lines = codebase.text_lines(code_file.text)
    context = {
        "analysis": analysis,
        "code_file": code_file,
        "lines": list(enumerate(lines, start=1)),
        "module": next(
            (m for m in analysis.project_map["modules"] if m["path"] == path), None
        ),
    }
    return render(request, "academic/code_source.html", context)


@login_required
@require_POST
def cancel(request, pk):
    analysis = _get_analysis_for_user(request, pk)
    code_actions.cancel_analysis(analysis)
    return redirect(analysis)


@login_required
@require_POST
def ask(request, pk):
    """Open the follow-up conversation about the project, made on first use."""
    analysis = _get_analysis_for_user(request, pk)
    conversation = code_actions.open_conversation(analysis)
    return redirect(conversation)
