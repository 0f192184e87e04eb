"""Reads of qualifications: what a crowd worker still has to pass, their next test item, and who stands where
(for the requester's pages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet

from annotate.models import (
    Batch,
    CrowdWorker,
    Provider,
    Qualification,
    QualificationAnswer,
    QualificationItem,
    QualificationResult,
)
from runs.models import UnitImage

Status = QualificationResult.Status

FAILED_MESSAGE = (
    "Thank you for taking the short test. Your answers did not reach the accuracy this requester needs for "
    "these tasks, so this batch is not open to you. You have not done anything wrong."
)
PENDING_MESSAGE = "Please take the short test for this batch first; the batch link opens it."


def qualifications_missing(
    *, batch: Batch, worker: CrowdWorker
) -> list[tuple[Qualification, QualificationResult | None]]:
    """The qualifications `batch` requires that `worker` has not passed, with their result so far."""
    required = list(batch.qualifications.order_by("name"))
    if not required:
        return []
    results = {
        r.qualification_id: r
        for r in QualificationResult.objects.filter(worker=worker, qualification__in=required)
    }
    return [
        (q, results.get(q.pk))
        for q in required
        if results.get(q.pk) is None or results[q.pk].status != Status.PASSED
    ]


def qualification_refusal(*, batch: Batch, worker: CrowdWorker) -> str:
    """Why `worker` may not take tasks of `batch` yet ("" when they passed all it requires): failed ones are
    told kindly and learn nothing about the gold answers. On an MTurk batch MTurk itself guards: its HIT type
    requires the qualifications' scores, so only a worker who passed there can accept a HIT, and an
    assignment counts only once MTurk confirms it (the result recorded here may lag until the next sync)."""
    if batch.provider == Provider.MTURK and worker.provider == Provider.MTURK:
        return ""
    missing = qualifications_missing(batch=batch, worker=worker)
    if not missing:
        return ""
    if any(result is not None and result.status == Status.FAILED for _, result in missing):
        return FAILED_MESSAGE
    return PENDING_MESSAGE


def qualification_next_item(*, qualification: Qualification, worker: CrowdWorker) -> QualificationItem | None:
    """The first item of the test `worker` has not answered, or None."""
    answered = QualificationAnswer.objects.filter(
        result__qualification=qualification, result__worker=worker
    ).values("item_id")
    return qualification.items.exclude(pk__in=answered).select_related("unit").order_by("position").first()


def qualification_item_images(*, item: QualificationItem) -> list[UnitImage]:
    """The images a worker sees for a test item: the unit's top `images_per_item` by rank."""
    return list(item.unit.images.order_by("rank")[: item.qualification.images_per_item])


def qualification_item_image(*, item: QualificationItem, rank: int) -> UnitImage | None:
    return next((image for image in qualification_item_images(item=item) if image.rank == rank), None)


def qualifications_of(*, user: Any) -> QuerySet[Qualification]:
    """The qualifications of the projects `user` may see, with their result counts."""
    return (
        Qualification.objects.visible_to(user)
        .select_related("project")
        .annotate(
            item_count=Count("items", distinct=True),
            passed=Count("results", filter=Q(results__status=Status.PASSED), distinct=True),
            failed=Count("results", filter=Q(results__status=Status.FAILED), distinct=True),
            pending=Count("results", filter=Q(results__status=Status.PENDING), distinct=True),
        )
        .order_by("project__name", "name")
    )


@dataclass(frozen=True)
class QualificationStanding:
    qualification: Qualification
    results: list[QualificationResult]


def qualification_results(*, qualification: Qualification, status: str = "") -> QuerySet[QualificationResult]:
    """Who passed, failed or is pending on `qualification` (`status`: only those), newest first."""
    results = qualification.results.select_related("worker").order_by("-started_at", "-pk")
    return results.filter(status=status) if status else results


def batch_qualification_standings(*, batch: Batch) -> list[QualificationStanding]:
    """For each qualification `batch` requires, every worker's result."""
    return [
        QualificationStanding(q, list(qualification_results(qualification=q)))
        for q in batch.qualifications.order_by("name")
    ]
