"""What was dissected: probe sets, networks, runs, the shards a run advances through, and the units it found.

A unit is one channel of a layer. `Unit.channel` is its 0-based channel index, the number pages, exports and
the API use; NetDissect's `tally.csv` numbers the same unit `channel + 1` in its `unit` column.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from runs.access import ProjectQuerySet, ProjectScopedQuerySet


class Readiness(models.TextChoices):
    """Whether a registered network or probe set was checked by a worker (or by the command that
    registered it)."""

    PENDING = "pending", "Being checked"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class Project(models.Model):
    """Who sees what: runs, networks, probe sets and batches belong to one project, and a requester sees the
    projects they are a member of (`runs.access`). Members are edited in the admin."""

    name = models.CharField(max_length=200, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ProbeSet(models.Model):
    """A folder (local path or s3:// prefix) of images with concept masks that units are dissected on.

    A dataset in another format (COCO, ADE20K, Pascal, a folder of images and masks, images a segmenter
    labels) is registered by its `source` and converted to this format by a worker: `path` is empty and the
    set PENDING until the conversion is done."""

    class Format(models.TextChoices):
        BRODEN = "broden", "Broden (ready to use)"
        COCO = "coco", "COCO (an instances or panoptic JSON)"
        ADE20K = "ade20k", "ADE20K (the dataset folder)"
        PASCAL_CONTEXT = "pascal-context", "Pascal-Context (the folder with labels.txt and trainval/)"
        PASCAL_PART = "pascal-part", "Pascal-Part (the folder with Annotations_Part/)"
        FOLDER = "folder", "Folder of images, masks/ and labels.csv"
        SEGMENTED = "segmented", "Folder of images labelled by a segmenter"

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="probe_sets")
    name = models.CharField(max_length=200, unique=True)
    path = models.CharField(max_length=1000, help_text="Local folder or s3://bucket/prefix")
    image_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Readiness.choices, default=Readiness.READY)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    source_format = models.CharField(max_length=16, choices=Format.choices, default=Format.BRODEN)
    source = models.JSONField(
        default=dict, blank=True, help_text="What a conversion reads: path, image size, segmenter"
    )

    objects = ProjectScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return self.name


class Network(models.Model):
    """A CNN to dissect: an architecture name plus either a state-dict checkpoint or a TorchScript file.

    `layers` holds the model's layer names, read once when it is registered, so that launching a run checks
    layer names without loading the model in a web request.

    A version of a network (a training checkpoint, a fine-tuned copy) is a network of its own, with its
    `step` and its `base`: a version has its own weights and layers and is dissected like any network, and
    every run of it inherits its step, so comparisons order runs by training without a step per run.

    A generator (latent batch to images) is dissected with a segmenter, also a network, whose `concepts`
    name its output classes; a generator run's probe set is the segmented samples drawn from its seed."""

    class Kind(models.TextChoices):
        CLASSIFIER = "classifier", "Classifier"
        GENERATOR = "generator", "Generator"
        SEGMENTER = "segmenter", "Segmenter"

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="networks")
    name = models.CharField(max_length=200, unique=True)
    architecture = models.CharField(max_length=100)
    weights = models.FileField(upload_to="networks/weights/", null=True, blank=True)
    torchscript = models.FileField(upload_to="networks/torchscript/", null=True, blank=True)
    layers = models.JSONField(default=list, blank=True)
    step = models.PositiveIntegerField(
        null=True, blank=True, help_text="Training step of this checkpoint (orders a series in comparisons)"
    )
    base = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="versions",
        help_text="The network this one is a checkpoint or a fine-tuned copy of",
    )
    status = models.CharField(max_length=16, choices=Readiness.choices, default=Readiness.READY)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CLASSIFIER)
    concepts = models.JSONField(
        default=list, blank=True, help_text='A segmenter\'s classes in output order: [{"name", "category"}]'
    )
    latent_shape = models.JSONField(
        default=list, blank=True, help_text="A generator's latent shape, e.g. [512]"
    )
    token_layers = models.JSONField(
        default=dict,
        blank=True,
        help_text="Layers that output tokens (transformers): name -> the rule that reads them as maps",
    )

    objects = ProjectScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return self.name


class DissectionRun(models.Model):
    """One dissection of some layers of a network on a probe set, or a set of imported units (no network)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        FAILED = "failed", "Failed"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="runs")
    name = models.CharField(max_length=200, unique=True)
    network = models.ForeignKey(Network, null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    probe_set = models.ForeignKey(
        ProbeSet, null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    segmenter = models.ForeignKey(
        Network,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="segmented_runs",
        help_text="A generator run's label source",
    )
    samples = models.PositiveIntegerField(default=0, help_text="A generator run's number of samples")
    seed = models.PositiveIntegerField(default=0, help_text="A generator run's sample seed")
    layers = models.JSONField(default=list, blank=True)
    tokens = models.CharField(
        max_length=32,
        default="auto",
        help_text="How a transformer layer's tokens become maps (dissection.tokens): auto, patches, cls, …",
    )
    semantics = models.CharField(max_length=100, blank=True, help_text="Concept source, e.g. broden")
    topk = models.PositiveIntegerField(default=20)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    shards_total = models.PositiveIntegerField(default=0)
    shards_done = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True, help_text="Per-layer report paths")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0.0) & Q(progress__lte=1.0), name="run_progress_0_1"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Unit(models.Model):
    """One channel of one layer; label, concept category and IoU stay empty until a dissection fills them."""

    run = models.ForeignKey(DissectionRun, on_delete=models.CASCADE, related_name="units")
    layer = models.CharField(max_length=200)
    channel = models.PositiveIntegerField(help_text="0-based channel index (tally.csv's unit is channel + 1)")
    label = models.CharField(max_length=200, blank=True, help_text="Automatic label (best concept)")
    concept_category = models.CharField(
        max_length=50, blank=True, help_text="Probe-set category of the automatic label (object, part, ...)"
    )
    iou = models.FloatField(null=True, blank=True)
    interpretable = models.BooleanField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    top_concepts = models.JSONField(default=list, blank=True)
    strip = models.FileField(
        upload_to="units/", blank=True, help_text="Thumbnails of the top images side by side (dissected runs)"
    )

    class Meta:
        ordering = ["run_id", "layer", "channel"]
        constraints = [
            models.UniqueConstraint(fields=["run", "layer", "channel"], name="unit_unique_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.run.name}/{self.layer}#{self.channel}"

    @property
    def number(self) -> int:
        """The number people see and cite ("unit 98"): NetDissect's 1-based `unit` of tally.csv."""
        return self.channel + 1


class UnitImage(models.Model):
    """A top-activating image of a unit, the activated region highlighted (outside at 20% brightness)."""

    unit = models.ForeignKey(Unit, on_delete=models.CASCADE, related_name="images")
    rank = models.PositiveIntegerField(help_text="0 = highest activation")
    image = models.FileField(
        upload_to="units/",
        blank=True,
        help_text="Empty until made: a dissected unit's full-size tiles are made when a batch or page needs "
        "them (runs.services.unit_tiles_ensure)",
    )
    max_activation = models.FloatField(null=True, blank=True)
    source_image = models.CharField(max_length=1000, blank=True)

    class Meta:
        ordering = ["unit_id", "rank"]
        constraints = [models.UniqueConstraint(fields=["unit", "rank"], name="unit_image_unique_rank")]

    def __str__(self) -> str:
        return f"{self.unit} rank {self.rank}"

    @property
    def number(self) -> int:
        """The image's number on a task's tile, the unit page and every export: 1..k by rank."""
        return self.rank + 1


class Shard(models.Model):
    """One step of a run's map-reduce, advanced by the pipeline in this order: scan shards over images
    [start, stop) of the probe set, one merge of the scans, tally shards over the same slices, one merge of
    the tallies, one render per layer, one publish. Unique per (run, phase, layer, index), so a repeated
    delivery finds its own row and never counts twice; `deliveries` caps redeliveries after worker crashes."""

    class Phase(models.TextChoices):
        SCAN = "scan", "Scan"
        MERGE_SCAN = "merge_scan", "Merge scans"
        TALLY = "tally", "Tally"
        MERGE_TALLY = "merge_tally", "Merge tallies"
        RENDER = "render", "Render"
        PUBLISH = "publish", "Publish"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    run = models.ForeignKey(DissectionRun, on_delete=models.CASCADE, related_name="shards")
    phase = models.CharField(max_length=16, choices=Phase.choices)
    layer = models.CharField(
        max_length=200,
        blank=True,
        help_text="Render shards only; the other phases cover every layer of the run",
    )
    index = models.PositiveIntegerField()
    start = models.PositiveIntegerField(default=0)
    stop = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    deliveries = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0)
    result_keys = models.JSONField(default=dict, blank=True, help_text="Storage key of the result per layer")
    queued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the broker last took this shard; empty while it never did"
    )
    updated_at = models.DateTimeField(auto_now=True, help_text="Last start, progress report or release")

    class Meta:
        ordering = ["run_id", "phase", "layer", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "phase", "layer", "index"], name="shard_unique_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.phase}/{self.layer or '*'}#{self.index}"


class ApiToken(models.Model):
    """A requester's key to the REST API (`/api/`), sent as `Authorization: Bearer <key>`.

    Only the SHA-256 of the key is stored (the key is 256 random bits, so an unsalted hash is safe to keep and
    fast to look up); the key itself is shown once, when it is made. It lives here because `runs` owns who
    may see what (`runs.access`): a token acts as its user, with that user's projects. Revoking keeps the row,
    so the record of which tokens existed stays."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. the script that uses it")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="The key's first characters")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["user_id", "-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEventQuerySet(ProjectScopedQuerySet["AuditEvent"]):
    """Audit events are appended, never changed: bulk updates and deletes are refused too."""

    def update(self, **kwargs: object) -> int:
        raise TypeError("audit events are append-only; they cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("audit events are append-only; they cannot be deleted")


class AuditEvent(models.Model):
    """One requester decision: who made it, when, what it was about, and what the crowd provider answered.

    An append-only table rather than django-simple-history or django-auditlog: those keep a copy of a row each
    time it changes, but a decision is an event (an approval also pays, a publish also calls the provider,
    a launch makes a run with its shards, an export changes no row), so row diffs would record the wrong
    thing and miss the provider's reply. It lives in `runs`, which `annotate` already imports; a batch is
    named by its public id (`batch_key`), since `runs` may not import `annotate`. Written by
    `runs.audit.audit_event_record` inside the decision's own transaction.
    """

    class Action(models.TextChoices):
        PUBLISH = "publish", "Publish batch"
        PAUSE = "pause", "Pause batch"
        CANCEL = "cancel", "Cancel batch"
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"
        BONUS = "bonus", "Bonus"
        BLOCK = "block", "Block crowd worker"
        UNBLOCK = "unblock", "Unblock crowd worker"
        QUALIFICATION = "qualification", "Qualification change"
        LAUNCH_RUN = "launch_run", "Launch run"
        CANCEL_RUN = "cancel_run", "Cancel run"
        EXPORT = "export", "Export"

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(
        max_length=150, blank=True, help_text="Who, kept when the account is deleted; empty = automatic"
    )
    at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=32, choices=Action.choices)
    batch_key = models.UUIDField(null=True, blank=True, db_index=True, help_text="Public id of the batch")
    run = models.ForeignKey(
        DissectionRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    subject = models.CharField(max_length=300, help_text="What the decision was about, in words")
    details = models.JSONField(default=dict, blank=True)
    provider_reply = models.JSONField(null=True, blank=True, help_text="The crowd provider's answer, if any")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["project", "-at"], name="audit_project_at_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name or 'automatic'}: {self.action} {self.subject}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise TypeError("audit events are append-only; they cannot be changed")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise TypeError("audit events are append-only; they cannot be deleted")


class Job(models.Model):
    """Long work outside a run's shards that a requester waits for (the demo's background extras, a probe-set
    conversion): its progress and ETA show on the dashboard, its error stays visible after it fails."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    key = models.CharField(max_length=100, help_text="What the job makes; one job per key and project")
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    note = models.CharField(max_length=300, blank=True, help_text="The step in progress, in words")
    error = models.TextField(blank=True)
    link = models.CharField(max_length=300, blank=True, help_text="Where the result is shown, once done")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(
        auto_now=True, help_text="Its last progress: the sweep hands a job back to the workers when it is old"
    )

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="job_key_per_project")]

    def __str__(self) -> str:
        return self.title

    @property
    def percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return int(100 * self.done / self.total) if self.total else 0
