import secrets
import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from assistant.models import END_STATES

TITLE_MAX_CHARS = 60
# Bounds of a conversation's settings. Temperature as the OpenAI API takes
# it; a preset's text is added to every request, so it is kept short enough
# not to crowd the context.
MIN_TEMPERATURE = 0.0
MAX_TEMPERATURE = 2.0
PRESET_PROMPT_MAX_CHARS = 4000
PRESET_NAME_MAX_CHARS = 80


def new_stream_key():
    return uuid.uuid4().hex


class ConversationQuerySet(models.QuerySet):
    def visible(self):
        """Conversations not in the bin: deleted ones wait there for an undo."""
        return self.filter(deleted_at__isnull=True)

    def in_sidebar_order(self):
        return self.visible().order_by("-pinned", "-updated")


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="conversations",
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    # True while the title is the question's first words, which the model's
    # suggestion may replace once. The model's title and a user's are kept
    # for good: editing, regenerating or switching branches never changes
    # them (chat.titling).
    title_is_auto = models.BooleanField(default=True)
    model = models.CharField(_("model"), max_length=200, blank=True)
    pinned = models.BooleanField(_("pinned"), default=False)
    # The conversation's settings (see chat.presets): text added to the
    # deployment's system prompt, and model parameters. Empty or None means
    # the server's or the model profile's default.
    preset_prompt = models.TextField(_("instructions"), blank=True)
    temperature = models.FloatField(_("temperature"), null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(
        _("output limit (tokens)"), null=True, blank=True
    )
    thinking = models.BooleanField(_("thinking"), default=True)
    # What the system message carries after the app's instructions, for a
    # conversation about something, e.g. a code project's map
    # (academic.code_actions). Sized by whoever sets it.
    context = models.TextField(_("context"), blank=True)
    # Set when the user deletes the conversation; it is hidden at once and
    # purged for good once the undo window has passed (see chat.actions).
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The last message of the branch the reader is shown (see chat.tree):
    # a reload, another tab and the exports show the path that ends here.
    current_leaf = models.ForeignKey(
        "Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True, db_index=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated"]
        indexes = [
            models.Index(fields=["user", "-updated"]),
            models.Index(fields=["user", "-pinned", "-updated"]),
        ]
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")

    def __str__(self):
        return self.title or f"#{self.pk}"

    def get_absolute_url(self):
        return reverse("chat-conversation", args=[self.pk])

    @property
    def group_name(self):
        """The channel-layer group that hears this conversation's events."""
        return f"conversation.{self.pk}"

    def title_from(self, text):
        """A first title: the question's first words, until a better one."""
        words = " ".join(text.split())
        if len(words) > TITLE_MAX_CHARS:
            words = words[: TITLE_MAX_CHARS - 1].rstrip() + "…"
        return words


class Preset(models.Model):
    """A user's named settings, to apply to a conversation or start one with.

    Applying copies the values: a later change to the preset leaves the
    conversations that used it as they were.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="chat_presets",
    )
    name = models.CharField(_("name"), max_length=PRESET_NAME_MAX_CHARS)
    prompt = models.TextField(_("instructions"), blank=True)
    temperature = models.FloatField(_("temperature"), null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(
        _("output limit (tokens)"), null=True, blank=True
    )
    thinking = models.BooleanField(_("thinking"), default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"], name="chat_preset_unique_name"
            )
        ]
        verbose_name = _("preset")
        verbose_name_plural = _("presets")

    def __str__(self):
        return self.name


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", _("user")
        ASSISTANT = "assistant", _("assistant")

    # While it lives, then how it ended (assistant.models.END_STATES).
    Status = models.TextChoices(
        "Status",
        [
            ("QUEUED", ("queued", _("queued"))),
            ("STREAMING", ("streaming", _("streaming"))),
            *END_STATES,
        ],
    )

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # The message this one follows: a question follows an answer, an answer
    # its question. Messages with the same parent are versions of one turn
    # (an edited question, a regenerated answer); the first questions of a
    # conversation have none.
    parent = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="children",
    )
    # When the message was last on the branch shown. Where a branch forks,
    # the version shown last is the one followed (chat.tree), so switching
    # back to a question shows the answer the reader had chosen under it.
    shown_at = models.DateTimeField(default=timezone.now)
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=32, choices=Status.choices, default=Status.STOP
    )
    # A short code for what went wrong (see chat.errors) and the server's own
    # words, shown next to the translated explanation.
    error_code = models.CharField(max_length=32, blank=True)
    error_detail = models.TextField(blank=True)
    # Figures the code's explanation is filled in with, in the reader's
    # language: for an over-quota refusal, what is left and when it resets.
    error_params = models.JSONField(default=dict, blank=True)

    created = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # When the model began to reason, stored as it begins: a page loaded
    # while it thinks counts its "thinking for N s" from here.
    reasoning_started_at = models.DateTimeField(null=True, blank=True)
    # Renewed by the worker writing the reply (chat.recovery); an open reply
    # whose mark has gone stale lost its worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Time spent in the app's queue before the backend took the request.
    queue_ms = models.PositiveIntegerField(null=True, blank=True)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    reasoning_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    # What was asked of the model: the prompt's estimated size, the output
    # limit sent, and whether the oldest turns were left out to fit.
    prompt_estimate = models.PositiveIntegerField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    trim_history = models.BooleanField(default=False)
    # Set on a retry "with a larger output limit": the limit to ask for.
    max_tokens_override = models.PositiveIntegerField(null=True, blank=True)
    # Something the reader should know even about a finished reply (see
    # chat.generation.WARNINGS), e.g. that the server cut the input.
    warning_code = models.CharField(max_length=32, blank=True)

    # As the API reported them; None means the API did not say.
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)

    # Names this attempt at the reply in the event log and the stop key; a
    # retry gets a new one, so nothing of an earlier attempt can leak in.
    stream_key = models.CharField(max_length=32, default=new_stream_key)
    # The last event number the row includes (see chat.streams).
    last_seq = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["created", "id"]
        indexes = [models.Index(fields=["conversation", "created"])]
        verbose_name = _("message")
        verbose_name_plural = _("messages")

    def __str__(self):
        return f"{self.role} #{self.pk}"

    @property
    def is_open(self):
        return self.status in (self.Status.QUEUED, self.Status.STREAMING)

    @property
    def stop_key(self):
        """The cache key whose presence asks the worker to stop this reply."""
        return f"chat:stop:{self.stream_key}"


def new_share_token():
    return secrets.token_urlsafe(24)


class SharedLinkQuerySet(models.QuerySet):
    def active(self):
        return self.filter(
            revoked_at__isnull=True, conversation__deleted_at__isnull=True
        )


class SharedLink(models.Model):
    """A read-only link to a conversation, for colleagues who are signed in.

    The token is the only secret: whoever holds the link and can sign in to
    the app may read the conversation as it stands now, until the owner
    revokes it. Nobody but the owner can write to the conversation.
    """

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="shared_links"
    )
    token = models.CharField(max_length=64, unique=True, default=new_share_token)
    created = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = SharedLinkQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        verbose_name = _("shared link")
        verbose_name_plural = _("shared links")

    def __str__(self):
        return f"share of {self.conversation_id}"

    def get_absolute_url(self):
        return reverse("chat-shared", args=[self.token])


class Attachment(models.Model):
    """A file a user attached to a question: its extracted text goes into the
    prompt after what they typed, and the question shows its name."""

    class Kind(models.TextChoices):
        TEXT = "text", _("text")
        MARKDOWN = "markdown", _("Markdown")
        LATEX = "latex", _("LaTeX")
        PDF = "pdf", _("PDF")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="chat_attachments",
    )
    # Empty from the upload until the question it was attached to is sent.
    message = models.ForeignKey(
        Message,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="attachments",
    )
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    text = models.TextField()
    size_bytes = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")

    def __str__(self):
        return self.name
