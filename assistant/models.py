import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
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


# How a request to a model ended, as (name, (value, label)): the end states
# of a chat reply (chat.models.Message.Status) and of every other request
# (UsageRecord.EndState). They mirror assistant.streaming.ReplyStatus.
END_STATES = [
    ("STOP", ("stop", _("finished"))),
    ("LENGTH_IN_REASONING", ("length_in_reasoning", _("cut off while thinking"))),
    ("LENGTH_IN_ANSWER", ("length_in_answer", _("cut off in the answer"))),
    ("NO_ANSWER", ("no_answer", _("thought but gave no answer"))),
    ("STOPPED", ("stopped", _("stopped"))),
    ("ERROR", ("error", _("error"))),
    ("INCOMPLETE", ("incomplete", _("interrupted"))),
    ("REASON_UNKNOWN", ("reason_unknown", _("ended for an unknown reason"))),
]


KEY_VARIABLE_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]*$")


def validate_key_variable(name):
    if not KEY_VARIABLE_PATTERN.match(name):
        raise ValidationError(
            _("Use the name of an environment variable, such as GPU02_API_KEY.")
        )


class Backend(models.Model):
    """One OpenAI-compatible server (vLLM, Ollama, llama.cpp, ...).

    The API key is never stored here: the row names the environment variable
    that holds it, read as NAME or as the file named by NAME_FILE, so that a
    copy of the database carries no credential. Backends given in the
    environment (MODEL_API_BASE_URL, MODEL_BACKENDS) are written here at
    start-up and on every refresh of the model list, with their address from
    the environment; administrators may add more rows by hand.
    """

    DEFAULT = "default"

    name = models.SlugField(_("name"), max_length=50, unique=True)
    base_url = models.URLField(
        _("base URL"),
        max_length=500,
        help_text=_("The API's root, usually ending in /v1."),
    )
    api_key_variable = models.CharField(
        _("API key variable"),
        max_length=100,
        blank=True,
        validators=[validate_key_variable],
        help_text=_(
            "Name of the environment variable holding the key (or NAME_FILE, "
            "a file holding it), set for every web and worker process. Empty "
            "for servers that want no key."
        ),
    )
    enabled = models.BooleanField(_("in use"), default=True)
    from_environment = models.BooleanField(
        _("given in the environment"),
        default=False,
        editable=False,
        help_text=_("Its address is rewritten from the environment."),
    )
    sort_order = models.IntegerField(_("sort order"), default=100)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sort_order", "name"]
        verbose_name = _("backend")
        verbose_name_plural = _("backends")

    def __str__(self):
        return self.name


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

    class ThinkingSwitch(models.TextChoices):
        """How a request turns the model's thinking on or off, if it can.

        What the servers accept, from their sources and documentation:

        - Ollama's /v1 takes `reasoning_effort` "high", "medium", "low" or
          "none" (or `reasoning: {effort}`), maps "none" to its native
          `think: false` and answers 400 "invalid reasoning value" for
          anything else. The native /api/chat `think` field itself is not
          reachable: this app speaks only the OpenAI-compatible /v1.
        - vLLM passes `chat_template_kwargs` to the chat template; Qwen3's
          template reads `enable_thinking` (false writes an empty think
          block, so the reply starts in the answer). vLLM's own
          `reasoning_effort` takes only "low", "medium" or "high", so it
          cannot switch thinking off there. Fields vLLM does not know are
          ignored with a warning in its log (since late 2024; older releases
          answered 400 "extra_forbidden").
        - DeepSeek-R1 served by either always thinks; its profile stays on
          NONE and the switch is not offered.
        """

        NONE = "none", _("cannot be switched")
        REASONING_EFFORT = "reasoning_effort", _("reasoning_effort (Ollama /v1)")
        CHAT_TEMPLATE_KWARGS = (
            "chat_template_kwargs",
            _("chat_template_kwargs.enable_thinking (vLLM, Qwen3)"),
        )

    name = models.CharField(_("model id"), max_length=200, unique=True)
    # One model id has one backend: the first that listed it. Spreading one
    # model over several servers is the job of a router in front of them
    # (vLLM's, or the proxy's), which then is the backend.
    backend = models.ForeignKey(
        Backend,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="models",
        verbose_name=_("backend"),
        help_text=_("The server that runs it; empty means the default one."),
    )
    display_name = models.CharField(_("display name"), max_length=200, blank=True)
    enabled = models.BooleanField(_("offered to users"), default=True)
    is_reasoning = models.BooleanField(_("reasoning model"), default=False)
    starts_in_reasoning = models.BooleanField(
        _("chat template opens <think>"),
        default=False,
        # Admin shows help texts as HTML, so the tags are not written here.
        help_text=_(
            "Tick when the server's chat template already writes the opening "
            "think tag, so the stream begins inside the reasoning and only "
            "the closing tag arrives."
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
    thinking_switch = models.CharField(
        _("thinking switch"),
        max_length=32,
        choices=ThinkingSwitch.choices,
        default=ThinkingSwitch.NONE,
        help_text=_(
            "How a conversation's thinking on/off setting reaches the server. "
            "Leave it at cannot be switched unless the server and model honour "
            "the parameter; otherwise the switch is hidden from users."
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

    @property
    def can_switch_thinking(self):
        return self.thinking_switch != self.ThinkingSwitch.NONE

    def thinking_params(self, thinking):
        """Request fields that turn thinking on or off, for the SDK's create().

        Thinking on sends nothing where the server thinks by default, so a
        model keeps its own default effort. Non-standard fields go in
        `extra_body`, which the openai SDK merges into the JSON body.
        """
        if self.thinking_switch == self.ThinkingSwitch.REASONING_EFFORT:
            return {} if thinking else {"extra_body": {"reasoning_effort": "none"}}
        if self.thinking_switch == self.ThinkingSwitch.CHAT_TEMPLATE_KWARGS:
            kwargs = {"enable_thinking": bool(thinking)}
            return {"extra_body": {"chat_template_kwargs": kwargs}}
        return {}

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


class UsageRecord(models.Model):
    """One request to a model, as metered: who, what, how much, how it ended.

    Token counts are the server's own; None means it did not say, which is
    not the same as zero. counted_tokens is what quotas count (see
    assistant.metering.counted_tokens).
    """

    class Kind(models.TextChoices):
        CHAT = "chat", _("chat")
        POLISH = "polish", _("academic polish")
        CONVERT = "convert", _("image to LaTeX")
        CODE = "code", _("code analysis")
        API = "api", _("API")
        PAPER = "paper", _("paper reading")

    # The same terms as chat.models.Message.Status, for every feature.
    EndState = models.TextChoices("EndState", END_STATES)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="usage_records",
        verbose_name=_("user"),
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    model = models.CharField(_("model"), max_length=200)
    end_state = models.CharField(
        _("end state"), max_length=32, choices=EndState.choices
    )
    error_code = models.CharField(_("error code"), max_length=32, blank=True)
    prompt_tokens = models.PositiveIntegerField(_("prompt tokens"), null=True)
    completion_tokens = models.PositiveIntegerField(_("completion tokens"), null=True)
    # DeepSeek counts the reasoning inside completion_tokens.
    reasoning_tokens = models.PositiveIntegerField(_("reasoning tokens"), null=True)
    counted_tokens = models.PositiveIntegerField(_("counted tokens"), default=0)
    queue_ms = models.PositiveIntegerField(_("queue wait (ms)"), null=True)
    first_token_ms = models.PositiveIntegerField(
        _("time to first token (ms)"), null=True
    )
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True)
    # Set for requests through the API: the key used and the team billed.
    api_key = models.ForeignKey(
        "api.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage_records",
        verbose_name=_("API key"),
    )
    group = models.ForeignKey(
        "auth.Group",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage_records",
        verbose_name=_("billed team"),
    )
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        ordering = ["-created"]
        indexes = [
            # The quota check and the usage page read one user's recent rows.
            models.Index(fields=["user", "created"]),
            # A key's token quota and the API usage page read one key's rows.
            models.Index(fields=["api_key", "created"]),
            # The staff overview reads everyone's recent rows.
            models.Index(fields=["created"]),
        ]
        verbose_name = _("usage record")
        verbose_name_plural = _("usage records")

    def __str__(self):
        return f"{self.kind} {self.model} {self.end_state} #{self.pk}"


class Quota(models.Model):
    """Token and concurrency limits for one user or for everyone in a group.

    A user may be under several (their own and their groups'); for each
    limit the tightest applies. An empty limit is no limit.
    """

    class Scope(models.TextChoices):
        USER = "user", _("user")
        GROUP = "group", _("group")

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="quota",
        verbose_name=_("user"),
    )
    group = models.OneToOneField(
        "auth.Group",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="quota",
        verbose_name=_("group"),
    )
    daily_tokens = models.PositiveIntegerField(
        _("tokens a day"),
        null=True,
        blank=True,
        help_text=_("Resets at local midnight. Empty: no daily limit."),
    )
    monthly_tokens = models.PositiveIntegerField(
        _("tokens a month"),
        null=True,
        blank=True,
        help_text=_("Resets on the 1st at local midnight. Empty: no monthly limit."),
    )
    concurrent_requests = models.PositiveIntegerField(
        _("concurrent requests"),
        null=True,
        blank=True,
        help_text=_(
            "Requests queued or running at once, across conversations. Empty: no limit."
        ),
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, group__isnull=True)
                    | models.Q(user__isnull=True, group__isnull=False)
                ),
                name="quota_user_or_group",
            )
        ]
        verbose_name = _("quota")
        verbose_name_plural = _("quotas")

    def __str__(self):
        if self.user_id:
            return f"{self.Scope.USER.label}: {self.user}"
        return f"{self.Scope.GROUP.label}: {self.group}"

    @property
    def scope(self):
        return self.Scope.USER if self.user_id else self.Scope.GROUP

    def clean(self):
        if bool(self.user_id) == bool(self.group_id):
            raise ValidationError(_("A quota is for either one user or one group."))


class CapacityProbeRun(models.Model):
    """One bounded capacity probe of a model's server, started from admin.

    The probe itself is assistant.capacity_probe, as `manage.py
    probe_capacity` runs it; this keeps what it measured and suggested so
    that an operator can read the table later and apply the limits.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    profile = models.ForeignKey(
        ModelProfile,
        on_delete=models.CASCADE,
        related_name="probe_runs",
        verbose_name=_("model profile"),
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
        verbose_name=_("requested by"),
    )
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.QUEUED
    )
    concurrency = models.JSONField(_("concurrency grid"))
    contexts = models.JSONField(_("prompt sizes (tokens)"))
    max_requests = models.PositiveIntegerField(_("request budget"))
    timeout = models.FloatField(_("timeout (s)"))
    requests_sent = models.PositiveIntegerField(_("requests sent"), default=0)
    # One dict per cell: context, concurrency, total_rate, mean_request_rate,
    # over_timeout, errors, mean_first_token_s, skipped, first_error.
    cells = models.JSONField(_("measurements"), default=list)
    # ModelProfile fields to set, and why; empty when the probe cannot say.
    suggestion = models.JSONField(_("suggested limits"), default=dict)
    reasons = models.JSONField(_("reasons"), default=list)
    error = models.TextField(_("error"), blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = _("capacity probe")
        verbose_name_plural = _("capacity probes")

    def __str__(self):
        return f"{self.profile.name} {self.created:%Y-%m-%d %H:%M}"


class OpenRequest(models.Model):
    """A request of a user's in flight outside chat: queued or streaming.

    The concurrency quota counts these with the user's open chat replies
    (chat.models.Message in queued or streaming). A row is written when a
    request starts and deleted however it ends; one left by a worker that
    died stops counting once it is older than any request could be.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=20)
    started = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["user", "id"], name="open_request_user")]
