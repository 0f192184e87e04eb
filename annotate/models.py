"""The crowd platform's records: batches of tasks on units of a run, the crowd workers who take them, their
assignments and the annotations they submit.

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

from agreement import categories
from runs.access import ProjectScopedQuerySet

CATEGORY_CHOICES = categories.CATEGORIES


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

    project = models.ForeignKey("runs.Project", on_delete=models.PROTECT, related_name="batches")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    title = models.CharField(max_length=200)
    instructions = models.TextField(blank=True)
    assignments_per_task = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    images_per_task = models.PositiveSmallIntegerField(
        default=20, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    reward = models.DecimalField(
        max_digits=8, decimal_places=2, default=Decimal("0.10"), validators=[MinValueValidator(Decimal("0"))]
    )
    assignment_duration = models.DurationField(default=timedelta(minutes=30))
    lifetime = models.DurationField(default=timedelta(days=7))
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Set on first publish")
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.LOCAL)
    state = models.CharField(max_length=16, choices=State.choices, default=State.DRAFT)
    auto_reject_failed_gold = models.BooleanField(default=False)
    block_below_accuracy = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Block workers whose gold accuracy falls below this (0..1); empty = never",
    )
    block_min_gold = models.PositiveSmallIntegerField(
        default=2, help_text="Gold answers a worker must have given before the accuracy threshold applies"
    )
    prolific_completion_code = models.CharField(max_length=100, blank=True)
    mturk_hit_type_id = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_at = models.DateTimeField(null=True, blank=True)

    objects = ProjectScopedQuerySet.as_manager()

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
    unit = models.ForeignKey("runs.Unit", on_delete=models.PROTECT, related_name="tasks")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.LABEL)
    candidate_label = models.CharField(max_length=200, blank=True)
    candidate_source = models.CharField(
        max_length=16, choices=CandidateSource.choices, blank=True, help_text="Never shown to workers"
    )
    is_gold = models.BooleanField(default=False)
    gold_category = models.CharField(max_length=16, choices=CATEGORY_CHOICES, blank=True)
    gold_words = models.JSONField(
        default=list, blank=True, help_text="Accepted words; never shown to workers"
    )
    mturk_hit_id = models.CharField(max_length=100, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["batch_id", "position"]
        constraints = [models.UniqueConstraint(fields=["batch", "position"], name="task_unique_position")]

    def __str__(self) -> str:
        return f"{self.batch} · {self.unit}"


class CrowdWorker(models.Model):
    """A crowd worker as one provider knows them; gold counters give their accuracy on known answers."""

    provider = models.CharField(max_length=16, choices=Provider.choices)
    external_id = models.CharField(max_length=200)
    label = models.CharField(
        max_length=100,
        blank=True,
        help_text="The name a worker typed on the local link: shown, never trusted",
    )
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
            models.CheckConstraint(
                condition=Q(gold_correct__lte=models.F("gold_total")), name="worker_gold_correct_lte_total"
            ),
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
    worker = models.ForeignKey(CrowdWorker, on_delete=models.PROTECT, related_name="assignments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACCEPTED)
    slot = models.PositiveSmallIntegerField(null=True, blank=True)
    accepted_at = models.DateTimeField()
    deadline = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    feedback = models.TextField(blank=True)
    gold_passed = models.BooleanField(null=True, blank=True)
    bonus = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0"))
    verified = models.BooleanField(
        default=True,
        help_text="False for an MTurk assignment until MTurk confirms it: unverified answers count in no "
        "statistic, pay no bonus and block nobody",
    )
    mturk_assignment_id = models.CharField(max_length=100, blank=True)
    mturk_hit_id = models.CharField(max_length=100, blank=True)
    turk_submit_to = models.URLField(blank=True)
    prolific_session_id = models.CharField(max_length=100, blank=True)
    prolific_study_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["task_id", "accepted_at"]
        constraints = [
            models.UniqueConstraint(fields=["task", "worker"], name="assignment_one_per_task_worker"),
            models.UniqueConstraint(
                fields=["task", "slot"], condition=Q(slot__isnull=False), name="assignment_one_live_per_slot"
            ),
            models.CheckConstraint(
                condition=(
                    Q(status__in=["accepted", "submitted", "approved"], slot__isnull=False)
                    | Q(status__in=["rejected", "returned", "expired"], slot__isnull=True)
                ),
                name="assignment_live_holds_slot",
            ),
            models.UniqueConstraint(
                fields=["mturk_assignment_id"],
                condition=~Q(mturk_assignment_id=""),
                name="assignment_unique_mturk_id",
            ),
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
