"""Every read of the annotation service that is more than a single `get` (HackSoft style)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from annotate.errors import InvalidAnswer
from annotate.models import Assignment, Batch, CrowdWorker, Task
from annotate.selectors.review import (
    LOW_PRECISION,
    CrowdWorkerOverview,
    ReviewFilters,
    ReviewTask,
    WorkerStatus,
    batch_pending,
    batch_review,
    batch_typical_time_ms,
    batch_verification,
    batch_workers,
    crowd_worker_name,
    crowd_worker_overview,
    review_tasks,
    worker_answered_count,
    worker_status,
)
from runs.models import DissectionRun, Unit, UnitImage

# The review and worker-status reads live in annotate.selectors.review; callers use them from here.
__all__ = [
    "LOW_PRECISION",
    "CrowdWorkerOverview",
    "ReviewFilters",
    "ReviewTask",
    "WorkerStatus",
    "batch_pending",
    "batch_review",
    "batch_typical_time_ms",
    "batch_verification",
    "batch_workers",
    "crowd_worker_name",
    "crowd_worker_overview",
    "review_tasks",
    "worker_answered_count",
    "worker_status",
]
Status = Assignment.Status
SELECTION_MODES = ("all", "interpretable", "sample", "list")
REVIEW_PAGE_SIZE = 25
"""Tasks per review page; the comparison links a unit to the page that shows it."""


def tasks_open_for_worker(*, batch: Batch, worker: CrowdWorker) -> QuerySet[Task]:
    """Tasks of `batch` the worker never took that still have a free slot, in batch order."""
    return (
        batch.tasks.exclude(assignments__worker=worker)
        .annotate(
            live=Count(
                "assignments",
                filter=Q(assignments__slot__isnull=False, assignments__slot__lt=batch.assignments_per_task),
            )
        )
        .filter(live__lt=batch.assignments_per_task)
        .order_by("position")
    )


def worker_current_assignment(*, batch: Batch, worker: CrowdWorker) -> Assignment | None:
    """The worker's accepted, not yet overdue assignment in `batch`, to resume after a reload."""
    return (
        Assignment.objects.filter(
            task__batch=batch, worker=worker, status=Status.ACCEPTED, deadline__gt=timezone.now()
        )
        .select_related("task")
        .order_by("accepted_at")
        .first()
    )


def worker_has_finished_work(*, batch: Batch, worker: CrowdWorker) -> bool:
    """Whether the worker has a submitted or approved answer in `batch`: what earns a completion code."""
    return Assignment.objects.filter(
        task__batch=batch, worker=worker, status__in=[Status.SUBMITTED, Status.APPROVED]
    ).exists()


def task_images(*, task: Task) -> list[UnitImage]:
    """The images a worker sees for `task`: the unit's top `images_per_task` by rank."""
    return list(task.unit.images.order_by("rank")[: task.batch.images_per_task])


def task_image(*, task: Task, rank: int) -> UnitImage | None:
    """The image of rank `rank` when `task` shows it (one of its top `images_per_task`), else None."""
    if rank not in task_image_ranks(task=task):
        return None
    return task.unit.images.filter(rank=rank).first()


def task_image_ranks(*, task: Task) -> list[int]:
    return list(
        task.unit.images.order_by("rank").values_list("rank", flat=True)[: task.batch.images_per_task]
    )


def batch_is_complete(*, batch: Batch) -> bool:
    """Every task holds assignments_per_task approved, verified answers."""
    return not (
        batch.tasks.annotate(
            approved=Count(
                "assignments", filter=Q(assignments__status=Status.APPROVED, assignments__verified=True)
            )
        )
        .filter(approved__lt=batch.assignments_per_task)
        .exists()
    )


@dataclass(frozen=True)
class Progress:
    required: int
    submitted: int
    approved: int
    rejected: int
    in_progress: int
    unverified: int = 0
    """Answers the provider has not confirmed yet (MTurk): counted in none of the numbers above."""


def batch_progress(*, batch: Batch) -> Progress:
    """Verified answers in (submitted, approved or rejected) against the number the batch asks for."""
    verified = Q(verified=True)
    counts = Assignment.objects.filter(task__batch=batch).aggregate(
        submitted=Count("pk", filter=verified & Q(status__in=[Status.SUBMITTED, Status.APPROVED])),
        approved=Count("pk", filter=verified & Q(status=Status.APPROVED)),
        rejected=Count("pk", filter=verified & Q(status=Status.REJECTED)),
        in_progress=Count("pk", filter=verified & Q(status=Status.ACCEPTED)),
        unverified=Count("pk", filter=Q(verified=False, status__in=Assignment.DONE)),
    )
    return Progress(required=batch.tasks.count() * batch.assignments_per_task, **counts)


def batches_overview(*, user: Any) -> list[tuple[Batch, Progress]]:
    """The batches of the projects `user` may see, newest first, with their progress."""
    batches = Batch.objects.visible_to(user).select_related("project").order_by("-created_at")
    return [(batch, batch_progress(batch=batch)) for batch in batches]


def units_select(
    *,
    run: DissectionRun,
    layer: str,
    mode: str,
    sample_size: int | None = None,
    numbers: Sequence[int] = (),
    seed: int | None = None,
) -> list[Unit]:
    """Units of `run`'s `layer`: all, interpretable only, a random sample of `sample_size`, or the listed unit
    `numbers` (channel + 1, as tally.csv and the pages number them)."""
    units = run.units.filter(layer=layer).order_by("channel")
    if not units.exists():
        raise InvalidAnswer(f"Layer: run {run.name!r} has no units in layer {layer!r}.")
    if mode == "all":
        return list(units)
    if mode == "interpretable":
        chosen = list(units.filter(interpretable=True))
        if not chosen:
            raise InvalidAnswer(f"Selection: no unit of layer {layer!r} is marked interpretable yet.")
        return chosen
    if mode == "sample":
        pool = list(units)
        if not sample_size or sample_size < 1 or sample_size > len(pool):
            raise InvalidAnswer(f"Sample size: choose between 1 and {len(pool)} units.")
        return sorted(random.Random(seed).sample(pool, sample_size), key=lambda u: u.channel)
    if mode == "list":
        wanted = list(dict.fromkeys(numbers))
        if not wanted:
            raise InvalidAnswer("Units: list at least one unit number.")
        found = {u.number: u for u in units.filter(channel__in=[n - 1 for n in wanted])}
        missing = [n for n in wanted if n not in found]
        if missing:
            raise InvalidAnswer(f"Units: layer {layer!r} has no unit {', '.join(map(str, missing))}.")
        return [found[i] for i in wanted]
    raise InvalidAnswer(f"Selection: {mode!r} is not one of {', '.join(SELECTION_MODES)}.")
