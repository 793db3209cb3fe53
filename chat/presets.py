"""A conversation's settings and the presets that fill them.

A conversation carries its own instructions (added to the deployment's
system prompt, in the one leading system message), a temperature, an output
limit within the model profile's cap, and thinking on or off where the
model can switch it. A preset is a named set of the same values that a user
applies to a conversation or starts one with.

The built-in presets are constants here rather than rows made by a data
migration: their names and instructions are translated with the rest of the
interface, so a Chinese reader gets Chinese instructions, and a later release
can improve their wording without touching anyone's data. They cannot be
renamed or deleted; a user who wants a variant saves it as their own.
"""

from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from assistant.models import ModelProfile
from chat.models import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    PRESET_NAME_MAX_CHARS,
    PRESET_PROMPT_MAX_CHARS,
    Preset,
)

BUILTIN_PREFIX = "builtin:"
SETTING_FIELDS = ("prompt", "temperature", "max_output_tokens", "thinking")


@dataclass(frozen=True)
class BuiltinPreset:
    key: str
    name: str
    prompt: str
    temperature: float | None = None
    max_output_tokens: int | None = None
    thinking: bool = True

    @property
    def ref(self):
        return BUILTIN_PREFIX + self.key


BUILTIN_PRESETS = [
    BuiltinPreset(
        key="reviewer",
        name=_("Reviewer"),
        prompt=_(
            "Act as a demanding but fair peer reviewer. Read what the user "
            "gives you as a manuscript draft: list its main weaknesses first "
            "(claims without evidence, gaps in the method, unclear figures or "
            "statistics), then minor points, each with a concrete suggestion. "
            "Do not rewrite the text unless asked."
        ),
        temperature=0.3,
    ),
    BuiltinPreset(
        key="textbook",
        name=_("Explain like a textbook"),
        prompt=_(
            "Explain like a good textbook: define each term before using it, "
            "build from first principles to the result, give a worked example, "
            "and end with a short summary of the key points."
        ),
        temperature=0.5,
    ),
]


def builtin_preset(ref):
    for preset in BUILTIN_PRESETS:
        if preset.ref == ref:
            return preset
    return None


def find_preset(user, ref):
    """A built-in preset by its ref, or one of `user`'s by its id; else None."""
    if not isinstance(ref, str | int) or ref in ("", None):
        return None
    ref = str(ref)
    if ref.startswith(BUILTIN_PREFIX):
        return builtin_preset(ref)
    if not ref.isdigit():
        return None
    return Preset.objects.filter(user=user, pk=int(ref)).first()


def presets_for(user):
    """Every preset `user` may apply, built-ins first, as the page draws them."""
    builtins = [preset_data(p, p.ref, builtin=True) for p in BUILTIN_PRESETS]
    own = [preset_data(p, str(p.pk)) for p in Preset.objects.filter(user=user)]
    return builtins + own


def preset_data(preset, ref, builtin=False):
    return {
        "ref": ref,
        "name": str(preset.name),
        "prompt": str(preset.prompt),
        "temperature": preset.temperature,
        "max_output_tokens": preset.max_output_tokens,
        "thinking": preset.thinking,
        "builtin": builtin,
    }


def conversation_settings(conversation):
    return {
        "prompt": conversation.preset_prompt,
        "temperature": conversation.temperature,
        "max_output_tokens": conversation.max_output_tokens,
        "thinking": conversation.thinking,
    }


def apply_settings(conversation, values):
    """Store checked settings on the conversation; the next reply uses them."""
    conversation.preset_prompt = values["prompt"]
    conversation.temperature = values["temperature"]
    conversation.max_output_tokens = values["max_output_tokens"]
    conversation.thinking = values["thinking"]
    if conversation.pk is not None:
        conversation.save(
            update_fields=[
                "preset_prompt",
                "temperature",
                "max_output_tokens",
                "thinking",
            ]
        )


def values_of(preset):
    return {
        "prompt": str(preset.prompt),
        "temperature": preset.temperature,
        "max_output_tokens": preset.max_output_tokens,
        "thinking": preset.thinking,
    }


def leading_system_prompt(conversation):
    """The one system message: the deployment's prompt, then the conversation's.

    Either may be empty; both empty sends no system message at all.
    """
    parts = [settings.CHAT_SYSTEM_PROMPT, conversation.preset_prompt]
    return "\n\n".join(part.strip() for part in parts if part and part.strip())


def requested_output_limit(conversation, profile):
    """The output limit the user asked for, never above the profile's cap."""
    if not conversation.max_output_tokens:
        return None
    return min(conversation.max_output_tokens, profile.max_output_tokens)


def thinking_enabled(conversation, profile):
    """Whether the next reply may think: off only where the model can switch."""
    return conversation.thinking or not profile.can_switch_thinking


def request_params(conversation, profile):
    """Fields beyond model, messages and max_tokens for the model request."""
    params = {}
    if conversation.temperature is not None:
        params["temperature"] = conversation.temperature
    params.update(profile.thinking_params(thinking_enabled(conversation, profile)))
    return params


class SettingsForm(forms.Form):
    """A conversation's or a preset's settings, checked against the model."""

    prompt = forms.CharField(
        label=_("Instructions"),
        required=False,
        max_length=PRESET_PROMPT_MAX_CHARS,
        strip=True,
    )
    temperature = forms.FloatField(
        label=_("Temperature"),
        required=False,
        min_value=MIN_TEMPERATURE,
        max_value=MAX_TEMPERATURE,
    )
    max_output_tokens = forms.IntegerField(
        label=_("Output limit (tokens)"), required=False, min_value=1
    )
    thinking = forms.BooleanField(label=_("Thinking"), required=False)

    def __init__(self, *args, profile=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.profile = profile

    def clean_max_output_tokens(self):
        limit = self.cleaned_data["max_output_tokens"]
        if limit is None or self.profile is None:
            return limit
        if limit > self.profile.max_output_tokens:
            raise forms.ValidationError(
                _(
                    "%(model)s writes at most %(cap)s tokens per reply; choose "
                    "%(cap)s or less, or leave it empty for the model's limit."
                ),
                params={
                    "model": self.profile.label,
                    "cap": self.profile.max_output_tokens,
                },
            )
        return limit


class PresetNameForm(forms.Form):
    name = forms.CharField(
        label=_("Preset name"), max_length=PRESET_NAME_MAX_CHARS, strip=True
    )

    def __init__(self, *args, user=None, exclude_pk=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.exclude_pk = exclude_pk

    def clean_name(self):
        name = " ".join(self.cleaned_data["name"].split())
        taken = Preset.objects.filter(user=self.user, name=name)
        if self.exclude_pk is not None:
            taken = taken.exclude(pk=self.exclude_pk)
        if taken.exists():
            raise forms.ValidationError(
                _("You already have a preset called “%(name)s”."),
                params={"name": name},
            )
        return name


def profile_for(conversation):
    """The profile of the conversation's model, made with defaults if new,
    as the reply will make it; None before a model is chosen."""
    if not conversation.model:
        return None
    return ModelProfile.ensure(conversation.model)


def first_error(form):
    """One message for the page: the first problem, with its field's label."""
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields else ""
        return f"{label}: {errors[0]}" if label else str(errors[0])
    return ""
