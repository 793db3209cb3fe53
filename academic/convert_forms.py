from django import forms
from django.utils.translation import gettext_lazy as _

from academic import imaging
from academic.models import Conversion


class ConversionForm(forms.Form):
    """A picture to convert and the output wanted; `model` from the offered ones."""

    image = forms.FileField(
        error_messages={"required": imaging.MESSAGES["empty"]},
    )
    kind = forms.ChoiceField(choices=Conversion.Kind.choices)
    target = forms.ChoiceField(choices=Conversion.Target.choices)
    wrapper = forms.ChoiceField(
        choices=Conversion.Wrapper.choices, required=False, initial="none"
    )
    model = forms.ChoiceField(required=False)

    def __init__(self, *args, vision_models=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.vision_models = list(vision_models)
        self.fields["model"].choices = [(p.name, p.label) for p in self.vision_models]

    def clean_image(self):
        upload = self.cleaned_data["image"]
        if upload.size > imaging.MAX_UPLOAD_BYTES:
            raise forms.ValidationError(imaging.MESSAGES["too_large_file"])
        try:
            return imaging.normalise(upload.read())
        except imaging.ImageRefused as refusal:
            raise forms.ValidationError(refusal.message, code=refusal.code) from None

    def clean_model(self):
        # The first model that reads images, unless the user chose another.
        return self.cleaned_data.get("model") or self.vision_models[0].name

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("kind") == Conversion.Kind.FORMULA and (
            cleaned.get("target") == Conversion.Target.HTML
        ):
            self.add_error(
                "target",
                _(
                    "A formula converts to LaTeX or Markdown; for Word, copy its "
                    "MathML after the conversion."
                ),
            )
        if cleaned.get("kind") == Conversion.Kind.TABLE:
            cleaned["wrapper"] = Conversion.Wrapper.NONE
        return cleaned

    def save(self, owner):
        image = self.cleaned_data["image"]
        return Conversion.objects.create(
            owner=owner,
            kind=self.cleaned_data["kind"],
            target=self.cleaned_data["target"],
            wrapper=self.cleaned_data["wrapper"] or Conversion.Wrapper.NONE,
            image=image.png,
            image_width=image.width,
            image_height=image.height,
            adjustments=list(image.steps),
            model=self.cleaned_data["model"],
        )
