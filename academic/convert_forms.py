from django import forms
from django.utils.translation import gettext_lazy as _

from academic import imaging, img2tex
from academic.models import Conversion


class ConversionOptionsForm(forms.Form):
    """The output wanted; `model` is one of the offered vision models."""

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

    def clean_model(self):
        # The first model that reads images, unless the user chose another;
        # none when only the offline formula engine is there.
        if not self.vision_models:
            return ""
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
        if cleaned.get("kind") == Conversion.Kind.TABLE and not self.vision_models:
            self.add_error("kind", img2tex.describe("tables_need_vision_model"))
        if cleaned.get("kind") == Conversion.Kind.TABLE or not cleaned.get("wrapper"):
            cleaned["wrapper"] = Conversion.Wrapper.NONE
        return cleaned

    def options(self):
        return {
            name: self.cleaned_data[name]
            for name in ("kind", "target", "wrapper", "model")
        }

    def save_again(self, earlier):
        """A new conversion of an earlier one's picture, with these options."""
        return Conversion.objects.create(
            owner=earlier.owner,
            image=earlier.image,
            image_width=earlier.image_width,
            image_height=earlier.image_height,
            adjustments=earlier.adjustments,
            **self.options(),
        )


class ConversionForm(ConversionOptionsForm):
    """A picture to convert, checked and normalised, and the output wanted."""

    image = forms.FileField(
        error_messages={"required": imaging.MESSAGES["empty"]},
    )

    field_order = ["image"]

    def clean_image(self):
        upload = self.cleaned_data["image"]
        if upload.size > imaging.MAX_UPLOAD_BYTES:
            raise forms.ValidationError(imaging.MESSAGES["too_large_file"])
        try:
            return imaging.normalise(upload.read())
        except imaging.ImageRefused as refusal:
            raise forms.ValidationError(refusal.message, code=refusal.code) from None

    def save(self, owner):
        image = self.cleaned_data["image"]
        return Conversion.objects.create(
            owner=owner,
            image=image.png,
            image_width=image.width,
            image_height=image.height,
            adjustments=list(image.steps),
            **self.options(),
        )
