import re

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

# Defaults for models the API lists that nobody has configured yet, matched on
# the model id. The R1 figures are those its operators settled on after the
# 671B deployment stalled: 16384 tokens of context, 6144 of input.
PROFILE_DEFAULTS = [
    (
        re.compile(r"r1|reason|think|qwq", re.IGNORECASE),
        {
            "is_reasoning": True,
            "context_window": 16384,
            "input_limit": 6144,
            "max_output_tokens": 8192,
        },
    ),
    (
        re.compile(r"v3|chat", re.IGNORECASE),
        {
            "is_reasoning": False,
            "context_window": 65536,
            "input_limit": 32768,
            "max_output_tokens": 4096,
        },
    ),
]
# Ids of models that read images (Qwen2.5-VL, LLaVA, GPT-4o, InternVL, ...).
# "vl" must stand alone, so that "vllm" in an id does not count.
VISION_PATTERN = re.compile(
    r"(?<![a-z])vl(?![a-z])|vision|llava|gpt-4o|internvl|pixtral|minicpm-v",
    re.IGNORECASE,
)
FALLBACK_DEFAULTS = {
    "is_reasoning": False,
    "context_window": 8192,
    "input_limit": 4096,
    "max_output_tokens": 2048,
}


class ModelProfileQuerySet(models.QuerySet):
    def enabled(self):
        return self.filter(enabled=True)

    def vision(self):
        return self.filter(enabled=True, supports_vision=True)


class ModelProfile(models.Model):
    """What the app knows about one model the API serves.

    Rows are created from the API's model list with defaults guessed from the
    model id; administrators correct them in Django admin.
    """

    name = models.CharField(_("model id"), max_length=200, unique=True)
    display_name = models.CharField(_("display name"), max_length=200, blank=True)
    enabled = models.BooleanField(_("offered to users"), default=True)
    is_reasoning = models.BooleanField(_("reasoning model"), default=False)
    starts_in_reasoning = models.BooleanField(
        _("chat template opens <think>"),
        default=False,
        help_text=_(
            "Tick when the server's chat template already writes the opening "
            "<think>, so the stream begins inside the reasoning and only "
            "</think> arrives."
        ),
    )
    context_window = models.PositiveIntegerField(_("context window (tokens)"))
    input_limit = models.PositiveIntegerField(_("input limit (tokens)"))
    max_output_tokens = models.PositiveIntegerField(_("output cap (tokens)"))
    concurrency_limit = models.PositiveIntegerField(
        _("concurrent requests"),
        default=4,
        help_text=_(
            "How many requests the backend may run at once for this model, in "
            "units: a short prompt takes one unit, a long one more. Work beyond "
            "that waits in the app's fair queue."
        ),
    )
    long_prompt_tokens = models.PositiveIntegerField(
        _("long prompt from (tokens)"),
        default=3072,
        help_text=_("Prompts at least this long count as long."),
    )
    long_prompt_cost = models.PositiveIntegerField(
        _("units a long prompt takes"), default=2
    )
    supports_vision = models.BooleanField(
        _("reads images"),
        default=False,
        help_text=_(
            "Tick when the model accepts images (image_url parts); the image "
            "converter uses only such models."
        ),
    )
    sort_order = models.IntegerField(_("sort order"), default=100)
    created = models.DateTimeField(auto_now_add=True)

    objects = ModelProfileQuerySet.as_manager()

    class Meta:
        ordering = ["sort_order", "name"]
        verbose_name = _("model profile")
        verbose_name_plural = _("model profiles")

    def __str__(self):
        return self.label

    @property
    def label(self):
        return self.display_name or self.name

    def admission_cost(self, prompt_tokens):
        """Units of the model's concurrency a request of this size takes.

        Long prompts cost more: the R1 deployment ran four 2k requests at
        once but stalled with four 4k ones.
        """
        if prompt_tokens >= self.long_prompt_tokens:
            return self.long_prompt_cost
        return 1

    @classmethod
    def defaults_for(cls, name, max_model_len=None):
        """Settings for a model nobody has configured, guessed from its id."""
        defaults = dict(FALLBACK_DEFAULTS)
        for pattern, values in PROFILE_DEFAULTS:
            if pattern.search(name):
                defaults = dict(values)
                break
        defaults["supports_vision"] = bool(VISION_PATTERN.search(name))

        # vLLM reports the context it was started with; trust it over a guess.
        if max_model_len:
            context = int(max_model_len)
            defaults["context_window"] = min(defaults["context_window"], context)
            defaults["input_limit"] = min(defaults["input_limit"], context // 2)
            defaults["max_output_tokens"] = min(
                defaults["max_output_tokens"], context // 2
            )
        return defaults

    @classmethod
    def ensure(cls, name, max_model_len=None):
        profile, _created = cls.objects.get_or_create(
            name=name, defaults=cls.defaults_for(name, max_model_len)
        )
        return profile


class ExternalIdentity(models.Model):
    """A user's account at a single sign-on provider.

    Users are found by the provider's issuer and subject, which never change
    or pass to someone else, and never by e-mail, which can.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="external_identities",
        verbose_name=_("user"),
    )
    issuer = models.CharField(_("issuer"), max_length=255)
    subject = models.CharField(_("subject"), max_length=255)
    claim_groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="+",
        verbose_name=_("groups from claims"),
        help_text=_(
            "Groups the provider's claims gave at the last sign-in. The next "
            "sign-in replaces these and keeps groups given by hand."
        ),
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["issuer", "subject"], name="unique_external_identity"
            )
        ]
        verbose_name = _("external identity")
        verbose_name_plural = _("external identities")

    def __str__(self):
        return f"{self.subject} @ {self.issuer}"
