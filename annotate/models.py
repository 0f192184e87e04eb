"""The crowd platform's records: batches of tasks on units of a run, the crowd workers who take them, their
assignments and the annotations they submit.

The database itself holds the invariants the crowd flow depends on: one assignment per (task, worker), at
most one live assignment per (task, slot) so two racers cannot both take the last slot, and one annotation
per assignment.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from agreement import categories
from agreement.records import DEFAULT_MIN_ANSWERS
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

    class TaskType(models.TextChoices):
        LABEL = "label", "Label units"
        TWOAFC = "2afc", "2AFC: which image activates the unit more"

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
    task_type = models.CharField(max_length=8, choices=TaskType.choices, default=TaskType.LABEL)
    twoafc = models.JSONField(
        default=dict,
        blank=True,
        help_text="A 2AFC batch's settings (conditions, references, quantiles, catch trials, seed); see "
        "annotate.services.twoafc",
    )
    auto_reject_failed_gold = models.BooleanField(default=False)
    show_featviz = models.BooleanField(
        default=False,
        help_text="Label tasks also show the unit's feature visualizations (runs.featviz), when it has some",
    )
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
    min_answers = models.PositiveSmallIntegerField(
        default=DEFAULT_MIN_ANSWERS,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Answers a unit needs before it enters the comparison's statistics; units with fewer are "
        "listed apart",
    )
    verifies = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="verifications",
        help_text="The batch whose labels this blind verification batch checks; empty for a labelling batch",
    )
    prolific_study_id = models.CharField(
        max_length=100, blank=True, help_text="The Prolific study made for this batch through the API"
    )
    prolific_study_status = models.CharField(
        max_length=32, blank=True, help_text="The study's status at Prolific when last seen"
    )
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
        TWOAFC = "2afc", "Pick the image that activates the unit more"

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
    twoafc = models.JSONField(
        default=dict, blank=True, help_text="A 2AFC trial's references and query pair; never shown to workers"
    )

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
    trial = models.JSONField(
        default=dict, blank=True, help_text="A 2AFC trial's condition and sides for this worker; never shown"
    )
    served_at = models.DateTimeField(null=True, blank=True, help_text="When a 2AFC trial was first served")

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
    choice = models.CharField(max_length=8, blank=True, help_text="A 2AFC answer: left or right")
    confidence = models.PositiveSmallIntegerField(null=True, blank=True, help_text="A 2AFC answer's 1-3")
    correct = models.BooleanField(null=True, blank=True, help_text="Whether a 2AFC pick was right")
    reaction_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="A 2AFC answer's time from serving the trial to the answer (server)"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.words} ({self.category})"


class BonusPayment(models.Model):
    """A bonus for one assignment, written before the provider is asked to pay it.

    Prolific's pay call is not idempotent: the record moves pending → set up (Prolific's bulk bonus id kept)
    → paying (written, and committed, before the pay call) → paid. A retry finds it paying and never calls
    pay again; it asks Prolific whether the bonus arrived instead.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Not sent yet"
        SET_UP = "set_up", "Set up at the provider"
        PAYING = "paying", "Pay call sent"
        PAID = "paid", "Paid"

    assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT, related_name="bonus_payment")
    amount = models.DecimalField(
        max_digits=8, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))]
    )
    reason = models.TextField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    provider_ref = models.CharField(max_length=100, blank=True, help_text="The provider's id for the payment")
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.amount} for {self.assignment_id} ({self.state})"


class OrderedJSONField(models.TextField):
    """JSON kept as text in its key order: PostgreSQL's jsonb sorts an object's keys, and the order of a
    summary table's keys is the order of its columns on the page and in the downloads."""

    _pyi_private_set_type: Any  # django-stubs: the value is the decoded JSON, not str
    _pyi_private_get_type: Any

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        return None if value is None else json.loads(value)

    def to_python(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    def get_prep_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value)


class ComparisonSummary(models.Model):
    """The comparison dashboard's figures (summary and plots) of a batch or a run for one aggregation.

    Computed once per change of their inputs by a worker task (`annotate.tasks.comparison_refresh`) and
    served from here; `fingerprint` names the inputs they were computed from
    (`annotate.selectors.comparison.comparison_fingerprint`), so a page can tell that they are stale.
    `queued_at` is set while a recomputation waits in the queue, so a burst of answers queues it once.
    """

    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.CASCADE, related_name="comparison_summaries"
    )
    run = models.ForeignKey(
        "runs.DissectionRun", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    aggregation = models.CharField(max_length=16)
    fingerprint = models.CharField(max_length=64)
    summary = OrderedJSONField()
    plots = OrderedJSONField()
    computed_at = models.DateTimeField()
    compute_seconds = models.FloatField()
    queued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(batch__isnull=False, run__isnull=True) | Q(batch__isnull=True, run__isnull=False),
                name="comparison_summary_of_batch_or_run",
            ),
            models.UniqueConstraint(
                fields=["batch", "aggregation"],
                condition=Q(batch__isnull=False),
                name="comparison_summary_one_per_batch",
            ),
            models.UniqueConstraint(
                fields=["run", "aggregation"],
                condition=Q(run__isnull=False),
                name="comparison_summary_one_per_run",
            ),
        ]

    def __str__(self) -> str:
        return f"comparison of {self.batch or self.run} ({self.aggregation})"


class Qualification(models.Model):
    """A screening test: gold units a crowd worker answers before any task of the batches that require it.

    A worker passes with at least `min_items` items answered and accuracy at least `min_accuracy`; the
    result is kept per crowd worker record (stable per provider id: Prolific participant, MTurk worker, or
    the local worker a browser carries from batch to batch), so the next batch requiring it skips the test.
    MTurk workers take it as the test of an MTurk QualificationType (`annotate.providers.mturk.screening`).
    """

    project = models.ForeignKey("runs.Project", on_delete=models.PROTECT, related_name="qualifications")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    min_accuracy = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    min_items = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    images_per_item = models.PositiveSmallIntegerField(
        default=20, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    prolific_group_id = models.CharField(
        max_length=100,
        blank=True,
        help_text="The Prolific participant group that participants who passed join (empty: none)",
    )
    mturk_qualification_type_id = models.CharField(
        max_length=100,
        blank=True,
        help_text="The MTurk QualificationType (with this test) that MTurk batches requiring it guard "
        "Accept with; made on the first such publish",
    )
    batches = models.ManyToManyField(Batch, blank=True, related_name="qualifications")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="qualification_unique_name")]

    def __str__(self) -> str:
        return self.name


class QualificationItem(models.Model):
    """One gold unit of a qualification's test, with its accepted answer (never shown to workers)."""

    qualification = models.ForeignKey(Qualification, on_delete=models.CASCADE, related_name="items")
    unit = models.ForeignKey("runs.Unit", on_delete=models.PROTECT, related_name="+")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    gold_category = models.CharField(max_length=16, choices=CATEGORY_CHOICES)
    gold_words = models.JSONField(default=list)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["qualification_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["qualification", "unit"], name="qualification_item_unique_unit")
        ]

    def __str__(self) -> str:
        return f"{self.qualification} · {self.unit}"


class QualificationResult(models.Model):
    """Where one crowd worker stands on one qualification: pending while they answer, then decided."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"

    qualification = models.ForeignKey(Qualification, on_delete=models.CASCADE, related_name="results")
    worker = models.ForeignKey(CrowdWorker, on_delete=models.PROTECT, related_name="qualification_results")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    items = models.PositiveSmallIntegerField(default=0, help_text="Items answered when decided")
    correct = models.PositiveSmallIntegerField(default=0)
    accuracy = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["qualification_id", "started_at"]
        constraints = [
            models.UniqueConstraint(fields=["qualification", "worker"], name="qualification_one_result"),
        ]

    def __str__(self) -> str:
        return f"{self.worker} on {self.qualification}: {self.status}"


class QualificationAnswer(models.Model):
    """A worker's answer to one item of a qualification test, scored against its gold answer."""

    result = models.ForeignKey(QualificationResult, on_delete=models.CASCADE, related_name="answers")
    item = models.ForeignKey(QualificationItem, on_delete=models.CASCADE, related_name="+")
    words = models.CharField(max_length=40)
    category = models.CharField(max_length=16, choices=CATEGORY_CHOICES)
    correct = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["result", "item"], name="qualification_one_answer_per_item")
        ]

    def __str__(self) -> str:
        return f"{self.words} ({self.category})"
