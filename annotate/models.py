"""The annotation service's records: what was dissected (probe sets, networks, runs, units and their images)
and the crowd work on it (batches of tasks, workers, assignments and their annotations).

The database itself holds the invariants the crowd flow depends on: one assignment per (task, worker), at
most one live assignment per (task, slot) so two racers cannot both take the last slot, and one annotation
per assignment.
"""
from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from annotate import categories

CATEGORY_CHOICES = categories.CATEGORIES


class ProbeSet(models.Model):
    """A folder (local path or s3:// prefix) of images with concept masks that units are dissected on."""

    name = models.CharField(max_length=200, unique=True)
    path = models.CharField(max_length=1000, help_text="Local folder or s3://bucket/prefix")
    image_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Network(models.Model):
    """A CNN to dissect: an architecture name plus either a state-dict checkpoint or a TorchScript file."""

    name = models.CharField(max_length=200, unique=True)
    architecture = models.CharField(max_length=100)
    weights = models.FileField(upload_to="networks/weights/", null=True, blank=True)
    torchscript = models.FileField(upload_to="networks/torchscript/", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

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

    name = models.CharField(max_length=200, unique=True)
    network = models.ForeignKey(Network, null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    probe_set = models.ForeignKey(ProbeSet, null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    layers = models.JSONField(default=list, blank=True)
    semantics = models.CharField(max_length=100, blank=True, help_text="Concept source, e.g. broden")
    topk = models.PositiveIntegerField(default=20)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    shards_total = models.PositiveIntegerField(default=0)
    shards_done = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True, help_text="Per-layer report paths")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(progress__gte=0.0) & Q(progress__lte=1.0),
                                   name="run_progress_0_1"),
        ]

    def __str__(self) -> str:
        return self.name


class Unit(models.Model):
    """One channel of one layer; label/category/IoU stay empty until a dissection fills them."""

    run = models.ForeignKey(DissectionRun, on_delete=models.CASCADE, related_name="units")
    layer = models.CharField(max_length=200)
    index = models.PositiveIntegerField(help_text="0-based channel index")
    label = models.CharField(max_length=200, blank=True, help_text="Automatic label (best concept)")
    category = models.CharField(max_length=50, blank=True, help_text="Broden category of the automatic label")
    iou = models.FloatField(null=True, blank=True)
    interpretable = models.BooleanField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    top_concepts = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["run_id", "layer", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "layer", "index"], name="unit_unique_per_run")]

    def __str__(self) -> str:
        return f"{self.run.name}/{self.layer}#{self.index}"


class UnitImage(models.Model):
    """A top-activating image of a unit, the activated region highlighted (outside at 20% brightness)."""

    unit = models.ForeignKey(Unit, on_delete=models.CASCADE, related_name="images")
    rank = models.PositiveIntegerField(help_text="0 = highest activation")
    image = models.FileField(upload_to="units/")
    max_activation = models.FloatField(null=True, blank=True)
    source_image = models.CharField(max_length=1000, blank=True)

    class Meta:
        ordering = ["unit_id", "rank"]
        constraints = [models.UniqueConstraint(fields=["unit", "rank"], name="unit_image_unique_rank")]

    def __str__(self) -> str:
        return f"{self.unit} rank {self.rank}"


class Provider(models.TextChoices):
    LOCAL = "local", "Local link"
    PROLIFIC = "prolific", "Prolific"
    MTURK = "mturk", "Amazon Mechanical Turk"


class Batch(models.Model):
    """A set of units to label by a crowd, with its pay, time limits, provider and gold policy."""

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        PAUSED = "paused", "Paused"
        FINISHED = "finished", "Finished"
        CANCELLED = "cancelled", "Cancelled"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    title = models.CharField(max_length=200)
    instructions = models.TextField(blank=True)
    assignments_per_task = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(100)])
    images_per_task = models.PositiveSmallIntegerField(
        default=20, validators=[MinValueValidator(1), MaxValueValidator(100)])
    reward = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0.10"),
                                 validators=[MinValueValidator(Decimal("0"))])
    assignment_duration = models.DurationField(default=timedelta(minutes=30))
    lifetime = models.DurationField(default=timedelta(days=7))
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Set on first publish")
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.LOCAL)
    state = models.CharField(max_length=16, choices=State.choices, default=State.DRAFT)
    auto_reject_failed_gold = models.BooleanField(default=False)
    block_below_accuracy = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Block workers whose gold accuracy falls below this (0..1); empty = never")
    block_min_gold = models.PositiveSmallIntegerField(
        default=2, help_text="Gold answers a worker must have given before the accuracy threshold applies")
    prolific_completion_code = models.CharField(max_length=100, blank=True)
    mturk_hit_type_id = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return self.title


class Task(models.Model):
    """One unit in a batch: a labelling task, or (kind=verify) a yes/no check of a candidate label."""

    class Kind(models.TextChoices):
        LABEL = "label", "Label the unit"
        VERIFY = "verify", "Verify a label"

    class CandidateSource(models.TextChoices):
        HUMAN = "human", "Human"
        DISSECTION = "dissection", "Dissection"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="tasks")
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="tasks")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.LABEL)
    candidate_label = models.CharField(max_length=200, blank=True)
    candidate_source = models.CharField(max_length=16, choices=CandidateSource.choices, blank=True,
                                        help_text="Never shown to workers")
    is_gold = models.BooleanField(default=False)
    gold_category = models.CharField(max_length=16, choices=CATEGORY_CHOICES, blank=True)
    gold_words = models.JSONField(default=list, blank=True, help_text="Accepted words; never shown to workers")
    mturk_hit_id = models.CharField(max_length=100, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["batch_id", "position"]
        constraints = [models.UniqueConstraint(fields=["batch", "position"], name="task_unique_position")]

    def __str__(self) -> str:
        return f"{self.batch} · {self.unit}"


class Worker(models.Model):
    """A crowd worker as one provider knows them; gold counters give their accuracy on known answers."""

    provider = models.CharField(max_length=16, choices=Provider.choices)
    external_id = models.CharField(max_length=200)
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    blocked = models.BooleanField(default=False)
    blocked_reason = models.TextField(blank=True)
    gold_total = models.PositiveIntegerField(default=0)
    gold_correct = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "external_id"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "external_id"], name="worker_unique_per_provider"),
            models.CheckConstraint(condition=Q(gold_correct__lte=models.F("gold_total")),
                                   name="worker_gold_correct_lte_total"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.external_id}"

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_total if self.gold_total else None


class Assignment(models.Model):
    """One worker on one task. Live assignments (accepted, submitted, approved) hold a slot number below
    the batch's assignments_per_task; returned, expired and rejected ones release it (slot NULL) so the
    unit still gets its answers."""

    class Status(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        SUBMITTED = "submitted", "Submitted"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        RETURNED = "returned", "Returned"
        EXPIRED = "expired", "Expired"

    LIVE = (Status.ACCEPTED, Status.SUBMITTED, Status.APPROVED)
    RELEASED = (Status.REJECTED, Status.RETURNED, Status.EXPIRED)
    DONE = (Status.SUBMITTED, Status.APPROVED, Status.REJECTED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
    worker = models.ForeignKey(Worker, on_delete=models.PROTECT, related_name="assignments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACCEPTED)
    slot = models.PositiveSmallIntegerField(null=True, blank=True)
    accepted_at = models.DateTimeField()
    deadline = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    feedback = models.TextField(blank=True)
    gold_passed = models.BooleanField(null=True, blank=True)
    bonus = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0"))
    mturk_assignment_id = models.CharField(max_length=100, blank=True)
    mturk_hit_id = models.CharField(max_length=100, blank=True)
    turk_submit_to = models.URLField(blank=True)
    prolific_session_id = models.CharField(max_length=100, blank=True)
    prolific_study_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["task_id", "accepted_at"]
        constraints = [
            models.UniqueConstraint(fields=["task", "worker"], name="assignment_one_per_task_worker"),
            models.UniqueConstraint(fields=["task", "slot"], condition=Q(slot__isnull=False),
                                    name="assignment_one_live_per_slot"),
            models.CheckConstraint(
                condition=(Q(status__in=["accepted", "submitted", "approved"], slot__isnull=False)
                           | Q(status__in=["rejected", "returned", "expired"], slot__isnull=True)),
                name="assignment_live_holds_slot"),
            models.UniqueConstraint(fields=["mturk_assignment_id"], condition=~Q(mturk_assignment_id=""),
                                    name="assignment_unique_mturk_id"),
        ]
        indexes = [models.Index(fields=["status", "deadline"], name="assignment_overdue_idx")]

    def __str__(self) -> str:
        return f"{self.worker} on {self.task_id} ({self.status})"


class Annotation(models.Model):
    """A worker's answer for one assignment (ICLR'15: words, images that do not fit, category)."""

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="annotation")
    words = models.CharField(max_length=40, blank=True)
    category = models.CharField(max_length=16, choices=CATEGORY_CHOICES, blank=True)
    rejected_ranks = models.JSONField(default=list, blank=True)
    shown_count = models.PositiveSmallIntegerField(default=0)
    precision = models.FloatField(null=True, blank=True, help_text="Images kept / images shown")
    time_spent_ms = models.PositiveIntegerField(default=0)
    verify_answer = models.BooleanField(null=True, blank=True, help_text="Yes/no answer of a verify task")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.words} ({self.category})"


class Shard(models.Model):
    """One piece of a run's map-reduce: a scan or tally over images [start, stop) of the probe set, or the
    render of one layer. Unique per (run, phase, layer, index), so a repeated delivery finds its own row and
    never counts twice; `deliveries` caps redeliveries after worker crashes."""

    class Phase(models.TextChoices):
        SCAN = "scan", "Scan"
        TALLY = "tally", "Tally"
        RENDER = "render", "Render"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    run = models.ForeignKey(DissectionRun, on_delete=models.CASCADE, related_name="shards")
    phase = models.CharField(max_length=16, choices=Phase.choices)
    layer = models.CharField(max_length=200, blank=True, help_text="Render shards only; scan and tally cover "
                                                                    "every layer of the run")
    index = models.PositiveIntegerField()
    start = models.PositiveIntegerField(default=0)
    stop = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    deliveries = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0)
    result_keys = models.JSONField(default=dict, blank=True, help_text="Storage key of the result per layer")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run_id", "phase", "layer", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "phase", "layer", "index"],
                                               name="shard_unique_per_run")]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.phase}/{self.layer or '*'}#{self.index}"
