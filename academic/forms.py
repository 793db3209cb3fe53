from pathlib import Path

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from academic.encoding import LF, DecodedText, EncodingProblem, decode_bytes
from academic.models import PolishJob

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
KIND_BY_SUFFIX = {
    ".txt": PolishJob.SourceKind.PLAIN,
    ".md": PolishJob.SourceKind.MARKDOWN,
    ".markdown": PolishJob.SourceKind.MARKDOWN,
    ".tex": PolishJob.SourceKind.LATEX,
}


class PolishForm(forms.Form):
    """A text pasted or a file uploaded, and what to do with it.

    A valid form's cleaned_data holds `decoded` (academic.encoding's
    DecodedText), `file_name` and the `source_kind` the text is read as.
    """

    text = forms.CharField(
        label=_("Text"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10}),
    )
    file = forms.FileField(
        label=_("Or upload a file (.txt, .md, .tex)"), required=False
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

    def __init__(self, *args, models=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(p.name, p.label) for p in models]
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
            cleaned["decoded"] = DecodedText(text, "utf-8", False, LF)
            cleaned["file_name"] = ""
        else:
            raise forms.ValidationError(
                _("Paste a text or choose a file first."), code="empty"
            )
        return cleaned

    def _read_upload(self, upload, cleaned):
        suffix = Path(upload.name).suffix.lower()
        if suffix not in KIND_BY_SUFFIX:
            raise forms.ValidationError(
                _("Only .txt, .md and .tex files can be read."), code="suffix"
            )
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                _("The file is larger than %(limit)s MB."),
                code="size",
                params={"limit": MAX_UPLOAD_BYTES // (1024 * 1024)},
            )

        try:
            cleaned["decoded"] = decode_bytes(upload.read())
        except EncodingProblem as problem:
            raise forms.ValidationError(problem.message, code="encoding") from None
        cleaned["file_name"] = Path(upload.name).name[:255]
        cleaned["source_kind"] = KIND_BY_SUFFIX[suffix]
