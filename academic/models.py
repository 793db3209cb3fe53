"""The academic workspace's rows: converted pictures, and polish jobs.

A polish, grammar or translation job has its files (one, or those a LaTeX
project's main file inputs), their chunks as the model returned them, and
the author's decision on each change. Everything the review page shows is
derived from these rows, so a reload, or a return days later, shows the
same review.
"""

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from academic import diffing, encoding, img2tex

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

    class Engine(models.TextChoices):
        VISION = "vision", _("vision model")
        OFFLINE = "offline", _("offline formula engine")

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
    # The vision model asked, or that would be asked when the offline
    # engine's reading is doubtful; empty when none is configured.
    model = models.CharField(_("model"), max_length=200, blank=True)
    # The engine whose answer this is.
    engine = models.CharField(
        _("engine"), max_length=16, choices=Engine.choices, default=Engine.VISION
    )
    # Why the answer is doubtful (academic.ocr_engine's codes); empty when
    # it is not, and always for the vision model, which says nothing of it.
    doubt = models.CharField(_("doubt"), max_length=16, blank=True)
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

    def finish(self, transcription, engine=Engine.VISION, doubt=""):
        self.status = self.Status.DONE
        self.source = transcription.source
        self.prompt_tokens = transcription.prompt_tokens
        self.completion_tokens = transcription.completion_tokens
        self.engine = engine
        self.doubt = doubt
        self.finished = timezone.now()
        self.save(
            update_fields=[
                "status",
                "source",
                "prompt_tokens",
                "completion_tokens",
                "engine",
                "doubt",
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


# ---------------------------------------------------------------------------
# Polish, grammar check and translation: a job, its files, chunks, decisions.
# ---------------------------------------------------------------------------

STOP_KEY_PREFIX = "academic:stop:"
QUEUE_KEY_PREFIX = "academic:queue:"


def new_cache_key():
    return uuid.uuid4().hex


class PolishJob(models.Model):
    class Task(models.TextChoices):
        POLISH = "polish", _("Polish")
        GRAMMAR = "grammar", _("Grammar check only")
        TRANSLATE_ZH_EN = "zh_en", _("Translate Chinese to English")
        TRANSLATE_EN_ZH = "en_zh", _("Translate English to Chinese")

    class Preset(models.TextChoices):
        JOURNAL = "journal", _("Journal style")
        CONCISE = "concise", _("Concise")
        KEEP_VOICE = "keep_voice", _("Keep my voice")

    class SourceKind(models.TextChoices):
        # The values are those of academic.masking.
        PLAIN = "plain", _("Plain text")
        MARKDOWN = "markdown", _("Markdown")
        LATEX = "latex", _("LaTeX")

    class Newline(models.TextChoices):
        LF = "lf", "LF"
        CRLF = "crlf", "CRLF"
        CR = "cr", "CR"
        MIXED = "mixed", _("mixed")

    class Status(models.TextChoices):
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        CANCELLED = "cancelled", _("cancelled")

    class CompileStatus(models.TextChoices):
        # The values of academic.compiling, and two of this model's own.
        NOT_LATEX = "", _("not LaTeX")
        PENDING = "pending", _("waiting for the parts")
        RUNNING = "running", _("compiling")
        OK = "ok", _("compiles")
        BROKEN = "broken", _("no longer compiles")
        ORIGINAL_FAILS = "original_fails", _("the original does not compile here")
        SKIPPED = "skipped", _("TeX is not installed")
        NOT_A_DOCUMENT = "not_a_document", _("not a whole document")

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="polish_jobs",
        verbose_name=_("owner"),
    )
    task = models.CharField(_("task"), max_length=16, choices=Task.choices)
    preset = models.CharField(
        _("style"), max_length=16, choices=Preset.choices, default=Preset.JOURNAL
    )
    glossary = models.TextField(_("glossary"), blank=True)
    model = models.CharField(_("model"), max_length=200)
    # Off asks a model that can switch (ModelProfile.thinking_switch) to
    # answer each chunk without reasoning first; others think regardless.
    thinking = models.BooleanField(_("thinking"), default=True)
    file_name = models.CharField(_("file name"), max_length=255, blank=True)
    # A project's zip as uploaded: the download is this archive with the
    # edited files replaced and every other member left byte for byte.
    archive = models.BinaryField(null=True, blank=True, editable=False)
    # Known without loading the archive, which pages defer.
    is_project = models.BooleanField(default=False, editable=False)
    # What a project referred to but the job could not edit, as
    # [{"path": ..., "reason": ...}] (academic.project).
    not_processed = models.JSONField(default=list, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.RUNNING
    )
    compile_status = models.CharField(
        _("compile check"), max_length=16, choices=CompileStatus.choices, blank=True
    )
    compile_engine = models.CharField(max_length=16, blank=True)
    # The errors the result has and the original has not, one a line.
    compile_errors = models.TextField(blank=True)
    # Names the job's cache keys; unlike the id, never reused by a later job.
    cache_key = models.CharField(max_length=32, default=new_cache_key, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["owner", "-created"])]
        verbose_name = _("polish job")
        verbose_name_plural = _("polish jobs")

    def __str__(self):
        return self.file_name or f"#{self.pk}"

    def get_absolute_url(self):
        return reverse("academic-job", args=[self.pk])

    @property
    def stop_key(self):
        """The cache key whose presence tells the job's chunk tasks to stop."""
        return f"{STOP_KEY_PREFIX}{self.cache_key}"

    @property
    def queue_key(self):
        """The cache key holding the job's best place in the model queue."""
        return f"{QUEUE_KEY_PREFIX}{self.cache_key}"

    @property
    def is_running(self):
        return self.status == self.Status.RUNNING

    @property
    def is_checking(self):
        """Whether the compile check is still to come."""
        return self.compile_status in (
            self.CompileStatus.PENDING,
            self.CompileStatus.RUNNING,
        )

    def progress(self):
        """(chunks finished, chunks in all)."""
        counts = self.chunks.aggregate(
            total=models.Count("pk"),
            finished=models.Count(
                "pk", filter=models.Q(status__in=PolishChunk.FINISHED_STATUSES)
            ),
        )
        return counts["finished"], counts["total"]

    def finish_if_complete(self):
        """Mark the job done once no chunk is left to run; True if it is."""
        if self.chunks.exclude(status__in=PolishChunk.FINISHED_STATUSES).exists():
            return False

        updated = PolishJob.objects.filter(
            pk=self.pk, status=self.Status.RUNNING
        ).update(status=self.Status.DONE, finished_at=timezone.now())
        if updated:
            self.status = self.Status.DONE
        return True

    def merged_texts(self, accept_all=None):
        """{file: its text with the author's decisions applied}, in order.

        `accept_all` True or False ignores the decisions and takes every
        change or none.
        """
        decisions = {} if accept_all is not None else self.decisions_by_chunk()
        pieces = {polish_file: [] for polish_file in self.files.all()}
        files = {polish_file.pk: polish_file for polish_file in pieces}
        for chunk in self.chunks.all():
            merged = chunk.merged_text(decisions.get(chunk.pk, {}), accept_all)
            pieces[files[chunk.file_id]].append(merged)
        texts = {polish_file: "".join(parts) for polish_file, parts in pieces.items()}
        return texts

    def merged_text(self, accept_all=None):
        """The merged text of the job's first (for a single file, only) file."""
        return next(iter(self.merged_texts(accept_all).values()), "")

    def decisions_by_chunk(self):
        """{chunk id: {change index: accepted}} for every recorded decision."""
        decisions = {}
        rows = ChangeDecision.objects.filter(chunk__job=self).values_list(
            "chunk_id", "change_index", "accepted"
        )
        for chunk_id, index, accepted in rows:
            decisions.setdefault(chunk_id, {})[index] = accepted
        return decisions


class PolishFile(models.Model):
    """One text file of a job, and how its bytes were written."""

    job = models.ForeignKey(PolishJob, on_delete=models.CASCADE, related_name="files")
    position = models.PositiveIntegerField()
    # The path inside the project, or the uploaded file's name.
    path = models.CharField(_("path"), max_length=500, blank=True)
    source_kind = models.CharField(
        _("kind of text"), max_length=16, choices=PolishJob.SourceKind.choices
    )
    # How the uploaded bytes were written, so that the download matches.
    encoding = models.CharField(_("encoding"), max_length=32, default="utf-8")
    has_bom = models.BooleanField(_("byte-order mark"), default=False)
    newline = models.CharField(
        _("line endings"),
        max_length=8,
        choices=PolishJob.Newline.choices,
        default=PolishJob.Newline.LF,
    )
    # The decoded text, with "\n" line endings unless they were mixed.
    source_text = models.TextField(_("source text"))
    # Placeholder number -> protected original (academic.placeholders).
    protected = models.JSONField(default=dict)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "position"], name="unique_file_position"
            )
        ]

    def __str__(self):
        return self.path or f"{self.job_id}:{self.position}"

    def decoded_source(self):
        """The encoding facts of the upload, as academic.encoding reads them."""
        return encoding.DecodedText(
            text=self.source_text,
            encoding=self.encoding,
            bom=self.has_bom,
            newline=NEWLINE_TEXT[self.newline],
        )


NEWLINE_TEXT = {
    PolishJob.Newline.LF: encoding.LF,
    PolishJob.Newline.CRLF: encoding.CRLF,
    PolishJob.Newline.CR: encoding.CR,
    PolishJob.Newline.MIXED: encoding.MIXED_NEWLINES,
}
NEWLINE_CHOICE = {text: choice for choice, text in NEWLINE_TEXT.items()}


class PolishChunk(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        # Kept as the original; `failure_code` and `failure_detail` say why.
        KEPT = "kept", _("not changed")

    FINISHED_STATUSES = (Status.DONE, Status.KEPT)

    job = models.ForeignKey(PolishJob, on_delete=models.CASCADE, related_name="chunks")
    file = models.ForeignKey(
        PolishFile, on_delete=models.CASCADE, related_name="chunks"
    )
    # Position in the job, across its files.
    position = models.PositiveIntegerField()
    # The chunk of the document as the author wrote it, and as it was sent.
    original_text = models.TextField()
    masked_text = models.TextField()
    # The model's chunk with the protected parts restored; empty until done.
    result_text = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    failure_code = models.CharField(max_length=32, blank=True)
    failure_detail = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "position"], name="unique_chunk_position"
            )
        ]

    def __str__(self):
        return f"{self.job_id}:{self.position}"

    @property
    def is_finished(self):
        return self.status in self.FINISHED_STATUSES

    @property
    def revised_text(self):
        """What the model made of the chunk; the original when it was kept."""
        if self.status == self.Status.DONE:
            return self.result_text
        return self.original_text

    def changes(self):
        """The word-level changes from the original to the model's text."""
        if self.status != self.Status.DONE:
            return []
        return diffing.diff_changes(self.original_text, self.result_text)

    def merged_text(self, decisions, accept_all=None):
        """The chunk with `decisions` ({index: accepted}) applied.

        A change without a decision counts as accepted: the author reviews
        the model's text and rejects what they do not want.
        """
        if self.status != self.Status.DONE:
            return self.original_text
        if accept_all is True:
            return self.result_text
        if accept_all is False:
            return self.original_text

        changes = self.changes()
        accepted = {
            change.index: decisions.get(change.index, True) for change in changes
        }
        return diffing.merge(self.original_text, changes, accepted)

    def finish(self, result_text):
        """End the chunk with the model's text (token counts as set).

        A cancel may have marked the chunk kept meanwhile (actions.cancel_job
        updates the rows, not this instance); the finished text wins, and no
        reason for keeping the original stays beside it.
        """
        self.status = self.Status.DONE
        self.result_text = result_text
        self.failure_code = ""
        self.failure_detail = ""
        self.finished_at = timezone.now()
        self.save(
            update_fields=[
                "status",
                "result_text",
                "failure_code",
                "failure_detail",
                "attempts",
                "prompt_tokens",
                "completion_tokens",
                "finished_at",
            ]
        )

    def keep_original(self, code, detail=""):
        """End the chunk unchanged, saying why; the original stays in the document."""
        self.status = self.Status.KEPT
        self.failure_code = code
        self.failure_detail = detail[:2000]
        self.finished_at = timezone.now()
        self.save(
            update_fields=[
                "status",
                "failure_code",
                "failure_detail",
                "attempts",
                "prompt_tokens",
                "completion_tokens",
                "finished_at",
            ]
        )


class ChangeDecision(models.Model):
    """The author's accept or reject of one change of one chunk.

    Changes are numbered by academic.diffing, whose diff has no time limit
    and so numbers the changes of the same texts the same way every time.
    """

    chunk = models.ForeignKey(
        PolishChunk, on_delete=models.CASCADE, related_name="decisions"
    )
    change_index = models.PositiveIntegerField()
    accepted = models.BooleanField()
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["chunk", "change_index"], name="unique_change_decision"
            )
        ]

    def __str__(self):
        return f"{self.chunk}#{self.change_index}={self.accepted}"


# ---------------------------------------------------------------------------
# Paper reading: a paper's extracted sections, the parts read one request at
# a time, and the summary made from their notes (academic.reading).
# ---------------------------------------------------------------------------

PAPER_STOP_KEY_PREFIX = "academic:paper-stop:"


class Paper(models.Model):
    class SourceKind(models.TextChoices):
        PDF = "pdf", _("PDF")
        LATEX = "latex", _("LaTeX source")
        TEXT = "text", _("Pasted text")

    class Status(models.TextChoices):
        READING = "reading", _("reading the parts")
        SUMMARISING = "summarising", _("writing the summary")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="papers",
        verbose_name=_("owner"),
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    file_name = models.CharField(_("file name"), max_length=255, blank=True)
    source_kind = models.CharField(
        _("source"), max_length=16, choices=SourceKind.choices
    )
    model = models.CharField(_("model"), max_length=200)
    # The reader's language when they uploaded it: the summary's language.
    language = models.CharField(max_length=16, default="zh-hans")
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.READING
    )
    # Files a LaTeX source \inputs, which a single upload does not hold.
    missing_inputs = models.JSONField(default=list, blank=True)
    # The model's structured summary, glossary and outline, as Markdown.
    summary = models.TextField(blank=True)
    failure_code = models.CharField(max_length=32, blank=True)
    failure_detail = models.TextField(blank=True)
    # The chat conversation about the paper, once the reader asks.
    conversation = models.OneToOneField(
        "chat.Conversation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="paper",
    )
    cache_key = models.CharField(max_length=32, default=new_cache_key, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["owner", "-created"])]
        verbose_name = _("paper")
        verbose_name_plural = _("papers")

    def __str__(self):
        return self.title or self.file_name or f"#{self.pk}"

    def get_absolute_url(self):
        return reverse("academic-paper", args=[self.pk])

    @property
    def stop_key(self):
        return f"{PAPER_STOP_KEY_PREFIX}{self.cache_key}"

    @property
    def is_running(self):
        return self.status in (self.Status.READING, self.Status.SUMMARISING)

    @property
    def has_pages(self):
        return self.source_kind == self.SourceKind.PDF

    def progress(self):
        """(parts read, parts in all); a failed part counts as read."""
        counts = self.parts.aggregate(
            total=models.Count("pk"),
            finished=models.Count(
                "pk", filter=models.Q(status__in=PaperPart.FINISHED_STATUSES)
            ),
        )
        return counts["finished"], counts["total"]


# The name references give the text before a paper's first heading (title,
# authors, often the abstract). Copied back by the model like "p.", so it is
# the same in every language.
FRONT_MATTER_LABEL = "Front matter"


class PaperSection(models.Model):
    """One section as extracted: its title and its text page by page."""

    paper = models.ForeignKey(Paper, on_delete=models.CASCADE, related_name="sections")
    position = models.PositiveIntegerField()
    title = models.CharField(max_length=200, blank=True)
    # [{"page": n or null, "text": ...}], as academic.pdftext.Block.
    blocks = models.JSONField(default=list)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["paper", "position"], name="unique_paper_section_position"
            )
        ]

    def __str__(self):
        return self.title or f"{self.paper_id}:{self.position}"

    @property
    def number(self):
        """The section's place in the list, for anchors; not the paper's
        own number, which is in the title as the paper prints it."""
        return self.position + 1

    @property
    def label(self):
        """How references name the section: its heading as the paper has it."""
        return self.title or FRONT_MATTER_LABEL

    @property
    def anchor(self):
        return f"section-{self.number}"


class PaperPart(models.Model):
    """A piece of a section small enough for one request: the "map" step."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("reading")
        DONE = "done", _("read")
        FAILED = "failed", _("failed")

    FINISHED_STATUSES = (Status.DONE, Status.FAILED)

    paper = models.ForeignKey(Paper, on_delete=models.CASCADE, related_name="parts")
    section = models.ForeignKey(
        PaperSection, on_delete=models.CASCADE, related_name="parts"
    )
    position = models.PositiveIntegerField()
    blocks = models.JSONField(default=list)
    # The model's notes on the part, each statement with its reference.
    notes = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    failure_code = models.CharField(max_length=32, blank=True)
    failure_detail = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["paper", "position"], name="unique_paper_part_position"
            )
        ]

    def __str__(self):
        return f"{self.paper_id}:{self.position}"


# The code project analysis keeps its rows in a module of its own.
from academic.code_models import CodeAnalysis, CodeFile, CodePart  # noqa: E402, F401
