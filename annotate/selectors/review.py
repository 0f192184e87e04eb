"""Reads of the requester's review (filters, numbered tiles, a crowd worker across batches) and of the crowd
worker's own status page.

Images of a task are numbered 1..k here as on the worker's task page and in exports: number = rank + 1.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Sum

from annotate.models import Assignment, Batch, CrowdWorker, Task
from runs.models import UnitImage

Status = Assignment.Status
LOW_PRECISION = 0.5
"""An answer whose worker kept less than this share of the images shown is 'low precision'."""
STATUS_FILTERS = {
    "pending": Status.SUBMITTED,
    "approved": Status.APPROVED,
    "rejected": Status.REJECTED,
}
ABANDONED = (Status.RETURNED, Status.EXPIRED)


@dataclass(frozen=True)
class ReviewFilters:
    """Which answers the review page shows; every field empty shows every answer."""

    status: str = ""
    failed_gold: bool = False
    low_precision: bool = False
    worker: CrowdWorker | None = None

    @property
    def active(self) -> bool:
        return bool(self.status or self.failed_gold or self.low_precision or self.worker)

    def query(self) -> str:
        """The filters as a query string (no leading '?'), for page links that keep them."""
        params: dict[str, str] = {}
        if self.status:
            params["status"] = self.status
        if self.failed_gold:
            params["failed_gold"] = "on"
        if self.low_precision:
            params["low_precision"] = "on"
        if self.worker is not None:
            params["worker"] = str(self.worker.public_id)
        return urlencode(params)

    def matching(self) -> Q:
        """The assignments (never the returned or expired ones) these filters keep."""
        q = ~Q(status__in=ABANDONED)
        if self.status:
            q &= Q(status=STATUS_FILTERS[self.status])
        if self.failed_gold:
            q &= Q(gold_passed=False)
        if self.low_precision:
            q &= Q(annotation__precision__lt=LOW_PRECISION)
        if self.worker is not None:
            q &= Q(worker=self.worker)
        return q


def batch_review(*, batch: Batch, filters: ReviewFilters | None = None) -> QuerySet[Task]:
    """Tasks with their unit, images and the answers `filters` keep (as `review_assignments`); with a filter
    set, only the tasks that have such an answer."""
    filters = filters or ReviewFilters()
    matching = Assignment.objects.filter(filters.matching())
    tasks = batch.tasks.select_related("unit__run")
    if filters.active:
        tasks = tasks.filter(Exists(matching.filter(task=OuterRef("pk"))))
    return tasks.prefetch_related(
        Prefetch(
            "assignments",
            queryset=matching.select_related("worker", "annotation").order_by("submitted_at", "accepted_at"),
            to_attr="review_assignments",
        ),
        Prefetch("unit__images", queryset=UnitImage.objects.order_by("rank")),
    ).order_by("position")


@dataclass(frozen=True)
class ReviewTile:
    """One image of a task as the worker saw it, with the workers (of the rows shown) who ticked it."""

    image: UnitImage
    number: int
    ticked_by: tuple[str, ...]


@dataclass(frozen=True)
class ReviewRow:
    assignment: Assignment
    ticked: tuple[int, ...]
    """The image numbers this worker ticked as not fitting."""


@dataclass(frozen=True)
class ReviewTask:
    task: Task
    tiles: list[ReviewTile]
    rows: list[ReviewRow]


def crowd_worker_name(worker: CrowdWorker) -> str:
    return f"{worker.external_id} ({worker.label})" if worker.label else worker.external_id


def review_tasks(tasks: Iterable[Task], *, images_per_task: int) -> list[ReviewTask]:
    """The tasks of one review page (from `batch_review`) with their numbered tiles and rows."""
    result = []
    for task in tasks:
        rows = []
        for assignment in getattr(task, "review_assignments", []):
            annotation = getattr(assignment, "annotation", None)
            ranks = annotation.rejected_ranks if annotation is not None else []
            rows.append(ReviewRow(assignment=assignment, ticked=tuple(rank + 1 for rank in ranks)))
        tiles = [
            ReviewTile(
                image=image,
                number=image.rank + 1,
                ticked_by=tuple(
                    crowd_worker_name(row.assignment.worker) for row in rows if image.rank + 1 in row.ticked
                ),
            )
            for image in list(task.unit.images.all())[:images_per_task]
        ]
        result.append(ReviewTask(task=task, tiles=tiles, rows=rows))
    return result


def batch_workers(*, batch: Batch) -> QuerySet[CrowdWorker]:
    """The crowd workers who took a task of `batch`, with their number of answers in it (`done`) and their
    gold answers in it (`gold_here`, `gold_right_here`; their work elsewhere is other projects' business)."""
    here = Q(assignments__task__batch=batch)
    return (
        CrowdWorker.objects.filter(assignments__task__batch=batch)
        .distinct()
        .annotate(
            done=Count("assignments", filter=here & Q(assignments__status__in=Assignment.DONE)),
            gold_here=Count(
                "assignments",
                filter=here & Q(assignments__gold_passed__isnull=False, assignments__verified=True),
            ),
            gold_right_here=Count(
                "assignments", filter=here & Q(assignments__gold_passed=True, assignments__verified=True)
            ),
        )
        .order_by("external_id")
    )


def batch_pending(*, batch: Batch) -> QuerySet[Assignment]:
    """Submitted answers awaiting a decision that the provider confirmed: what 'approve the rest' approves."""
    return Assignment.objects.filter(task__batch=batch, status=Status.SUBMITTED, verified=True)


@dataclass(frozen=True)
class CrowdWorkerOverview:
    """A crowd worker as one requester sees them: their answers in the batches of the requester's projects
    only (a crowd worker's work for other projects stays out, gold counts included)."""

    worker: CrowdWorker
    assignments: list[Assignment]
    gold_total: int
    gold_correct: int
    median_time_ms: float | None
    decisions: dict[str, int]
    bonus_total: Decimal
    batches: list[Batch] = field(default_factory=list)

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_total if self.gold_total else None


def crowd_worker_overview(*, user: Any, worker_id: Any) -> CrowdWorkerOverview | None:
    """The crowd worker `worker_id` (public id) across the batches `user` may see; None when they took no
    task of any of them."""
    worker = CrowdWorker.objects.filter(public_id=worker_id).first()
    if worker is None:
        return None
    taken = Assignment.objects.filter(worker=worker, task__batch__in=Batch.objects.visible_to(user))
    if not taken.exists():
        return None
    answered = list(
        taken.filter(status__in=Assignment.DONE)
        .select_related("task__batch", "task__unit", "annotation")
        .order_by("-submitted_at", "-pk")
    )
    counted = [a for a in answered if a.verified]
    gold = [a for a in counted if a.gold_passed is not None]
    times = [a.annotation.time_spent_ms for a in counted if hasattr(a, "annotation")]
    batches = list(
        Batch.objects.filter(pk__in=taken.values("task__batch"))
        .select_related("project")
        .order_by("-created_at")
    )
    return CrowdWorkerOverview(
        worker=worker,
        assignments=answered,
        gold_total=len(gold),
        gold_correct=sum(1 for a in gold if a.gold_passed),
        median_time_ms=statistics.median(times) if times else None,
        decisions={
            label: sum(1 for a in counted if a.status == status)
            for label, status in (
                ("pending", Status.SUBMITTED),
                ("approved", Status.APPROVED),
                ("rejected", Status.REJECTED),
            )
        },
        bonus_total=taken.aggregate(total=Sum("bonus"))["total"] or Decimal("0"),
        batches=batches,
    )


@dataclass(frozen=True)
class WorkerStatus:
    """What a crowd worker sees of their own work in one batch: their answers and the requester's decisions,
    feedback and bonuses. Never a unit's automatic label, a gold answer or which task was a check."""

    assignments: list[Assignment]
    pending: int
    approved: int
    rejected: int
    bonus_total: Decimal
    earned: Decimal
    """Reward for each approved answer plus every bonus."""


def worker_status(*, batch: Batch, worker: CrowdWorker) -> WorkerStatus:
    answered = list(
        Assignment.objects.filter(task__batch=batch, worker=worker, status__in=Assignment.DONE)
        .select_related("annotation")
        .order_by("submitted_at", "pk")
    )
    approved = sum(1 for a in answered if a.status == Status.APPROVED)
    bonus_total = sum((a.bonus for a in answered), Decimal("0"))
    return WorkerStatus(
        assignments=answered,
        pending=sum(1 for a in answered if a.status == Status.SUBMITTED),
        approved=approved,
        rejected=sum(1 for a in answered if a.status == Status.REJECTED),
        bonus_total=bonus_total,
        earned=batch.reward * approved + bonus_total,
    )


def worker_answered_count(*, batch: Batch, worker: CrowdWorker) -> int:
    """How many tasks of `batch` the worker has answered (submitted, approved or rejected)."""
    return Assignment.objects.filter(task__batch=batch, worker=worker, status__in=Assignment.DONE).count()


def batch_typical_time_ms(*, batch: Batch, minimum: int = 3) -> float | None:
    """The median time people took on a task of `batch`, once at least `minimum` answers are in."""
    times = list(
        Assignment.objects.filter(
            task__batch=batch, status__in=Assignment.DONE, annotation__isnull=False
        ).values_list("annotation__time_spent_ms", flat=True)
    )
    return statistics.median(times) if len(times) >= minimum else None


def batch_verification(*, batch: Batch) -> Batch | None:
    """The verification batch made from `batch` that is not cancelled, if any."""
    return batch.verifications.exclude(state=Batch.State.CANCELLED).order_by("-created_at").first()
