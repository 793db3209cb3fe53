from pathlib import Path

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from academic import project
from academic.actions import Document
from academic.encoding import LF, DecodedText, EncodingProblem, decode_bytes
from academic.models import PolishJob

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_ARCHIVE_BYTES = 20 * 1024 * 1024
KIND_BY_SUFFIX = {
    ".txt": PolishJob.SourceKind.PLAIN,
    ".md": PolishJob.SourceKind.MARKDOWN,
    ".markdown": PolishJob.SourceKind.MARKDOWN,
    ".tex": PolishJob.SourceKind.LATEX,
}


class PolishForm(forms.Form):
    """A text pasted or a file uploaded, and what to do with it.

    A valid form's cleaned_data holds `documents` (academic.actions'
    Document list), `file_name`, and for a project's zip `archive` and
    `not_processed`.
    """

    text = forms.CharField(
        label=_("Text"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10}),
    )
    file = forms.FileField(
        label=_("Or upload a file (.txt, .md, .tex) or a LaTeX project (.zip)"),
        required=False,
    )
    source_kind = forms.ChoiceField(
        label=_("The pasted text is"),
        choices=PolishJob.SourceKind.choices,
        initial=PolishJob.SourceKind.LATEX,
    )
    task = forms.ChoiceField(label=_("Task"), choices=PolishJob.Task.choices)
    preset = forms.ChoiceField(
        label=_("Style (polish only)"), choices=PolishJob.Preset.choices
    )
    glossary = forms.CharField(
        label=_("Glossary (optional, one term per line: source = wording)"),
        required=False,
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    model = forms.ChoiceField(label=_("Model"))
    # Shown only for the models that can switch (workspace_form.js); the
    # others think regardless, as in chat.
    thinking = forms.BooleanField(
        label=_("Thinking (the model reasons before it answers)"),
        required=False,
        initial=True,
    )

    def __init__(self, *args, models=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(p.name, p.label) for p in models]
        names = [profile.name for profile in models]
        if settings.DEFAULT_MODEL in names:
            self.fields["model"].initial = settings.DEFAULT_MODEL
        self.fields["text"].max_length = settings.MAX_MESSAGE_CHARS * 10

    def clean(self):
        cleaned = super().clean()
        text = cleaned.get("text") or ""
        upload = cleaned.get("file")
        if upload and text.strip():
            raise forms.ValidationError(
                _("Paste a text or upload a file, not both."), code="both"
            )
        if upload:
            self._read_upload(upload, cleaned)
        elif text.strip():
            # Browsers send a textarea's line breaks as CRLF whatever was
            # pasted; pasted text comes back as UTF-8 with "\n".
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            decoded = DecodedText(text, "utf-8", False, LF)
            cleaned["documents"] = [Document("", decoded, cleaned.get("source_kind"))]
            cleaned["file_name"] = ""
        else:
            raise forms.ValidationError(
                _("Paste a text or choose a file first."), code="empty"
            )
        return cleaned

    def _read_upload(self, upload, cleaned):
        suffix = Path(upload.name).suffix.lower()
        cleaned["file_name"] = Path(upload.name).name[:255]
        if suffix == ".zip":
            self._read_project(upload, cleaned)
            return
        if suffix not in KIND_BY_SUFFIX:
            raise forms.ValidationError(
                _("Only .txt, .md, .tex and .zip files can be read."), code="suffix"
            )
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                _("The file is larger than %(limit)s MB."),
                code="size",
                params={"limit": MAX_UPLOAD_BYTES // (1024 * 1024)},
            )

        try:
            decoded = decode_bytes(upload.read())
        except EncodingProblem as problem:
            raise forms.ValidationError(problem.message, code="encoding") from None
        kind = KIND_BY_SUFFIX[suffix]
        cleaned["documents"] = [Document(cleaned["file_name"], decoded, kind)]

    def _read_project(self, upload, cleaned):
        if upload.size > MAX_ARCHIVE_BYTES:
            raise forms.ValidationError(
                _("The file is larger than %(limit)s MB."),
                code="size",
                params={"limit": MAX_ARCHIVE_BYTES // (1024 * 1024)},
            )

        data = upload.read()
        try:
            latex_project = project.read_project(data)
        except project.ProjectProblem as problem:
            raise forms.ValidationError(problem.message, code="project") from None
        cleaned["documents"] = [
            Document(path, latex_project.decoded[path], PolishJob.SourceKind.LATEX)
            for path in latex_project.edit_order
        ]
        cleaned["archive"] = data
        cleaned["not_processed"] = latex_project.not_processed
