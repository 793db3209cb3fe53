import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# A key reads "ra-<prefix>-<secret>": the prefix finds the row and is shown
# on the keys page so a team can tell its keys apart; the secret is 32 random
# bytes, of which only the SHA-256 is stored. Such a secret cannot be
# guessed, so a fast hash is enough (a slow one guards weak passwords).
KEY_SCHEME = "ra"
PREFIX_BYTES = 6
SECRET_BYTES = 32


def hash_secret(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(raw_key):
    """(prefix, secret) of a key as a client sent it, or None if malformed."""
    scheme, _sep, rest = (raw_key or "").partition("-")
    prefix, _sep, secret = rest.partition("-")
    if scheme != KEY_SCHEME or not prefix or not secret:
        return None
    return prefix, secret


class ApiKeyQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)

    def managed_by(self, user):
        """Keys the user made, and the keys of the teams the user is in."""
        return self.filter(
            models.Q(user=user) | models.Q(group__in=user.groups.all())
        ).distinct()


class ApiKey(models.Model):
    """A key a user or a team's tools use to call the API.

    `user` made the key; its requests count against that user's quotas and
    those of the user's groups. `group` is the team billed for it; any
    member may rotate or revoke a team key.
    """

    name = models.CharField(_("name"), max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_keys",
        verbose_name=_("created by"),
    )
    group = models.ForeignKey(
        "auth.Group",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="api_keys",
        verbose_name=_("billed team"),
    )
    prefix = models.CharField(_("prefix"), max_length=16, unique=True)
    secret_hash = models.CharField(_("secret hash"), max_length=64)
    allowed_models = models.JSONField(
        _("models"),
        default=list,
        blank=True,
        help_text=_("Model ids the key may use. Empty: every offered model."),
    )
    requests_per_minute = models.PositiveIntegerField(
        _("requests a minute"), null=True, blank=True
    )
    daily_tokens = models.PositiveIntegerField(_("tokens a day"), null=True, blank=True)
    monthly_tokens = models.PositiveIntegerField(
        _("tokens a month"), null=True, blank=True
    )
    created = models.DateTimeField(_("created"), default=timezone.now)
    rotated_at = models.DateTimeField(_("rotated"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self):
        return f"{self.name} ({self.display_prefix})"

    @property
    def display_prefix(self):
        return f"{KEY_SCHEME}-{self.prefix}-…"

    @property
    def is_active(self):
        return self.revoked_at is None

    def allows_model(self, model):
        return not self.allowed_models or model in self.allowed_models

    def matches(self, secret):
        # Constant time, so the answer's timing says nothing of the hash.
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))

    def new_secret(self):
        """Give the key a new secret and return the full key, shown once.

        The old secret stops working when the row is saved. The prefix
        changes too, so a log line with the old prefix is the old secret.
        """
        self.prefix = secrets.token_hex(PREFIX_BYTES)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        self.secret_hash = hash_secret(secret)
        return f"{KEY_SCHEME}-{self.prefix}-{secret}"

    def rotate(self):
        raw_key = self.new_secret()
        self.rotated_at = timezone.now()
        self.save(update_fields=["prefix", "secret_hash", "rotated_at"])
        return raw_key

    def revoke(self):
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])

    @classmethod
    def find(cls, raw_key):
        """The active key a client's bearer token stands for, or None."""
        parts = split_key(raw_key)
        if parts is None:
            return None

        prefix, secret = parts
        key = (
            cls.objects.active()
            .select_related("user", "group")
            .filter(prefix=prefix)
            .first()
        )
        if key is None or not key.matches(secret):
            return None
        return key
