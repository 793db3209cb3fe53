from django import forms
from django.utils.translation import gettext_lazy as _

from assistant.api.models import ApiKey
from assistant.models import ModelProfile


class ApiKeyForm(forms.ModelForm):
    """A new key's name, team, scope and limits; the secret is made apart."""

    allowed_models = forms.MultipleChoiceField(
        label=_("Models"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None ticked: every model the app offers."),
    )

    class Meta:
        model = ApiKey
        fields = [
            "name",
            "group",
            "allowed_models",
            "requests_per_minute",
            "daily_tokens",
            "monthly_tokens",
        ]
        labels = {
            "name": _("Name"),
            "group": _("Team billed"),
            "requests_per_minute": _("Requests a minute"),
            "daily_tokens": _("Tokens a day"),
            "monthly_tokens": _("Tokens a month"),
        }
        help_texts = {
            "group": _("Empty: the key is yours alone."),
            "requests_per_minute": _("Empty: no limit of its own."),
            "daily_tokens": _("Empty: no limit of its own."),
            "monthly_tokens": _("Empty: no limit of its own."),
        }

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["group"].queryset = user.groups.order_by("name")
        self.fields["group"].empty_label = _("Only me")
        self.fields["allowed_models"].choices = [
            (profile.name, profile.label) for profile in ModelProfile.objects.enabled()
        ]
