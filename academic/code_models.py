"""A code project analysis: the files read, the map worked out from them, the
model's summary of each part of each file, and its overview of the whole.

The part summaries run side by side as polish chunks do (academic.tasks),
each through assistant.completion; the overview is asked for once the last
part has ended, from the map and the summaries. A file cut into several
parts has a summary per part and none of its own: the overview is where
they meet. Everything the page shows
is on these rows, so a reload shows the same analysis.
"""

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from academic import codebase

STOP_KEY_PREFIX = "academic:code:stop:"
QUEUE_KEY_PREFIX = "academic:code:queue:"


def new_cache_key():
    return uuid.uuid4().hex


class CodeAnalysis(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        CANCELLED = "cancelled", _("cancelled")

    class OverviewStatus(models.TextChoices):
        PENDING = "pending", _("waiting for the file summaries")
        RUNNING = "running", _("writing the overview")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="code_analyses",
        verbose_name=_("owner"),
    )
    name = models.CharField(_("file name"), max_length=255)
    model = models.CharField(_("model"), max_length=200)
    # The language the model is asked to answer in: the reader's at upload.
    language = models.CharField(max_length=16, default="zh-hans")
    # academic.codemap's map, and academic.codebase's skipped files.
    project_map = models.JSONField(default=dict)
    skipped = models.JSONField(default=list, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.RUNNING
    )
    overview = models.TextField(_("overview"), blank=True)
    overview_status = models.CharField(
        max_length=16, choices=OverviewStatus.choices, default=OverviewStatus.PENDING
    )
    overview_failure = models.CharField(max_length=64, blank=True)
    # The follow-up conversation, once the reader opens it.
    conversation = models.ForeignKey(
        "chat.Conversation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    cache_key = models.CharField(max_length=32, default=new_cache_key, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["owner", "-created"])]
        verbose_name = _("code analysis")
        verbose_name_plural = _("code analyses")

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("academic-code-analysis", args=[self.pk])

    @property
    def stop_key(self):
        """The cache key whose presence tells the analysis's tasks to stop."""
        return f"{STOP_KEY_PREFIX}{self.cache_key}"

    @property
    def queue_key(self):
        return f"{QUEUE_KEY_PREFIX}{self.cache_key}"

    @property
    def is_running(self):
        return self.status == self.Status.RUNNING

    def progress(self):
        """(parts finished, parts in all), the overview counted as a part."""
        counts = self.parts.aggregate(
            total=models.Count("pk"),
            finished=models.Count(
                "pk", filter=models.Q(status__in=CodePart.FINISHED_STATUSES)
            ),
        )
        overview_done = self.overview_status in (
            self.OverviewStatus.DONE,
            self.OverviewStatus.FAILED,
        )
        return counts["finished"] + overview_done, counts["total"] + 1

    def parts_finished(self):
        return not self.parts.exclude(status__in=CodePart.FINISHED_STATUSES).exists()

    def claim_overview(self):
        """True for the one caller that gets to write the overview."""
        return bool(
            CodeAnalysis.objects.filter(
                pk=self.pk, overview_status=self.OverviewStatus.PENDING
            ).update(overview_status=self.OverviewStatus.RUNNING)
        )

    def finish_overview(self, text, failure=""):
        self.overview = text
        self.overview_failure = failure
        self.overview_status = (
            self.OverviewStatus.FAILED if failure else self.OverviewStatus.DONE
        )
        self.finished_at = timezone.now()
        if self.status == self.Status.RUNNING:
            self.status = self.Status.DONE
        self.save(
            update_fields=[
                "overview",
                "overview_failure",
                "overview_status",
                "finished_at",
                "status",
            ]
        )


class CodeFile(models.Model):
    """One file that was read: its text, for the source view and the prompts."""

    analysis = models.ForeignKey(
        CodeAnalysis, on_delete=models.CASCADE, related_name="files"
    )
    position = models.PositiveIntegerField()
    path = models.CharField(_("path"), max_length=500)
    language = models.CharField(max_length=16)
    text = models.TextField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["analysis", "path"], name="unique_code_file_path"
            )
        ]

    def __str__(self):
        return self.path

    def get_absolute_url(self):
        return reverse("academic-code-source", args=[self.analysis_id, self.path])


class CodePart(models.Model):
    """A run of lines of one file, summarised by one model request."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    FINISHED_STATUSES = (Status.DONE, Status.FAILED)

    analysis = models.ForeignKey(
        CodeAnalysis, on_delete=models.CASCADE, related_name="parts"
    )
    file = models.ForeignKey(CodeFile, on_delete=models.CASCADE, related_name="parts")
    position = models.PositiveIntegerField()
    first_line = models.PositiveIntegerField()
    last_line = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    summary = models.TextField(blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_detail = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["position"]

    def __str__(self):
        return f"{self.file.path}:{self.first_line}-{self.last_line}"

    def lines(self):
        all_lines = codebase.text_lines(self.file.text)
        return all_lines[self.first_line - 1 : self.last_line]

    def finish(self, summary):
        self.status = self.Status.DONE
        self.summary = summary
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "summary", "finished_at"])

    def fail(self, code, detail=""):
        self.status = self.Status.FAILED
        self.failure_code = code
        self.failure_detail = detail[:2000]
        self.finished_at = timezone.now()
        self.save(
            update_fields=["status", "failure_code", "failure_detail", "finished_at"]
        )
