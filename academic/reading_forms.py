from pathlib import Path

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from academic import papertext, pdftext
from academic.encoding import EncodingProblem, decode_bytes
from academic.models import Paper

MAX_TEX_BYTES = 5 * 1024 * 1024


class PaperForm(forms.Form):
    """A PDF, a LaTeX source or pasted text, and the model to read it.

    A valid form's cleaned_data holds `title`, `sections` (academic.pdftext
    Section list), `source_kind`, `file_name` and `missing_inputs`.
    """

    file = forms.FileField(label=_("Upload a paper (.pdf or .tex)"), required=False)
    text = forms.CharField(
        label=_("Or paste its text (e.g. an arXiv abstract page)"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8}),
    )
    model = forms.ChoiceField(label=_("Model"))

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
        cleaned["missing_inputs"] = []
        if upload:
            self._read_upload(upload, cleaned)
        elif text.strip():
            title, sections = papertext.text_sections(text.replace("\r\n", "\n"))
            cleaned.update(
                title=title, sections=sections, source_kind=Paper.SourceKind.TEXT
            )
            cleaned["file_name"] = ""
        else:
            raise forms.ValidationError(
                _("Paste a text or choose a file first."), code="empty"
            )
        if not any(section.blocks for section in cleaned["sections"]):
            raise forms.ValidationError(_("The paper holds no text."), code="no_text")
        return cleaned

    def _read_upload(self, upload, cleaned):
        suffix = Path(upload.name).suffix.lower()
        cleaned["file_name"] = Path(upload.name).name[:255]
        if suffix == ".pdf":
            try:
                title, sections = pdftext.pdf_sections(upload.read())
            except pdftext.ExtractionProblem as problem:
                raise forms.ValidationError(problem.message, code="pdf") from None
            cleaned.update(
                title=title, sections=sections, source_kind=Paper.SourceKind.PDF
            )
            return
        if suffix != ".tex":
            raise forms.ValidationError(
                _("Only .pdf and .tex files can be read as papers."), code="suffix"
            )
        if upload.size > MAX_TEX_BYTES:
            raise forms.ValidationError(
                _("The file is larger than %(limit)s MB."),
                code="size",
                params={"limit": MAX_TEX_BYTES // (1024 * 1024)},
            )
        try:
            decoded = decode_bytes(upload.read())
        except EncodingProblem as problem:
            raise forms.ValidationError(problem.message, code="encoding") from None
        title, sections, inputs = papertext.latex_sections(decoded.text)
        cleaned.update(
            title=title or cleaned["file_name"],
            sections=sections,
            source_kind=Paper.SourceKind.LATEX,
            missing_inputs=inputs,
        )
