from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from academic import img2tex

# ---------------------------------------------------------------------------
# Image to LaTeX, Markdown and HTML: one row per converted picture.
# ---------------------------------------------------------------------------


class ConversionQuerySet(models.QuerySet):
    def for_history(self):
        # The picture itself stays behind: a list of fifty would otherwise
        # read up to fifty images from the database.
        return self.defer("image")


class Conversion(models.Model):
    """A picture of a formula or table, and the source a model read from it.

    The normalised PNG is kept in the database rather than under MEDIA_ROOT:
    the app has no media storage shared by its web and worker processes
    (they may run on different hosts), the image is small after
    normalisation (at most 2048 pixels on its long side), and it is served
    only to its owner by a view that checks, which a database row gives
    without any file-serving configuration. Deleting the row deletes it.
    """

    class Kind(models.TextChoices):
        FORMULA = img2tex.FORMULA, _("Formula")
        TABLE = img2tex.TABLE, _("Table")

    class Target(models.TextChoices):
        LATEX = img2tex.LATEX, _("LaTeX")
        MARKDOWN = img2tex.MARKDOWN, _("Markdown")
        HTML = img2tex.HTML, _("HTML")

    class Wrapper(models.TextChoices):
        NONE = "none", _("No delimiters")
        INLINE = "inline", _("Inline")
        DISPLAY = "display", _("Display")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Converting")
        DONE = "done", _("Done")
        ERROR = "error", _("Failed")

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="conversions",
        verbose_name=_("owner"),
    )
    created = models.DateTimeField(_("created"), auto_now_add=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    target = models.CharField(_("output"), max_length=16, choices=Target.choices)
    wrapper = models.CharField(
        _("formula delimiters"),
        max_length=16,
        choices=Wrapper.choices,
        default=Wrapper.NONE,
    )
    image = models.BinaryField(_("image (PNG)"))
    image_width = models.PositiveIntegerField(_("image width"))
    image_height = models.PositiveIntegerField(_("image height"))
    # Normalising steps that ran (academic.imaging), e.g. ["inverted"].
    adjustments = models.JSONField(_("adjustments"), default=list, blank=True)
    model = models.CharField(_("model"), max_length=200)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    queue_position = models.PositiveIntegerField(null=True, blank=True)
    # The bare source as read from the image; output_text() adds delimiters.
    source = models.TextField(_("source"), blank=True)
    error_code = models.CharField(_("error code"), max_length=64, blank=True)
    error_detail = models.TextField(_("error detail"), blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)

    objects = ConversionQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name = _("conversion")
        verbose_name_plural = _("conversions")

    def __str__(self):
        return f"{self.get_kind_display()} → {self.get_target_display()} #{self.pk}"

    def get_absolute_url(self):
        return reverse("academic-convert-status", args=[self.pk])

    @property
    def is_open(self):
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def error_message(self):
        return img2tex.describe(self.error_code) if self.error_code else ""

    def output_text(self):
        """The source as the user copies it, with the delimiters they chose."""
        if self.kind != self.Kind.FORMULA or not self.source:
            return self.source
        if self.wrapper == self.Wrapper.INLINE:
            return f"${self.source}$"
        if self.wrapper == self.Wrapper.DISPLAY:
            if self.target == self.Target.MARKDOWN:
                return f"$$\n{self.source}\n$$"
            return f"\\[\n{self.source}\n\\]"
        return self.source

    def set_queue_position(self, position):
        self.queue_position = position
        self.save(update_fields=["queue_position"])

    def mark_running(self):
        self.status = self.Status.RUNNING
        self.queue_position = None
        self.save(update_fields=["status", "queue_position"])

    def finish(self, transcription):
        self.status = self.Status.DONE
        self.source = transcription.source
        self.prompt_tokens = transcription.prompt_tokens
        self.completion_tokens = transcription.completion_tokens
        self.finished = timezone.now()
        self.save(
            update_fields=[
                "status",
                "source",
                "prompt_tokens",
                "completion_tokens",
                "finished",
            ]
        )

    def fail(self, code, detail=""):
        self.status = self.Status.ERROR
        self.error_code = code
        self.error_detail = detail[:2000]
        self.queue_position = None
        self.finished = timezone.now()
        self.save(
            update_fields=[
                "status",
                "error_code",
                "error_detail",
                "queue_position",
                "finished",
            ]
        )
