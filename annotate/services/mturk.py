"""MTurk's scores of the qualification tests an MTurk batch requires, recorded as qualification results.

MTurk scores a worker's test itself (its AnswerKey gives the percentage right) and lets only a score at the
threshold accept the batch's HITs; the batch sync reads the scores back (ListWorkersWithQualificationType)
so the qualification pages show who passed and who failed, as for local and Prolific workers. An MTurk
worker appears once MTurk has scored them: MTurk grades a test on submit, so none is ever pending here. A
later score (a retake after the retry delay, or one the requester revoked there) replaces the earlier one.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from annotate.models import Batch, Provider, Qualification, QualificationResult
from annotate.providers import get_provider
from annotate.providers.mturk import client as mturk
from annotate.providers.mturk.screening import required_score
from annotate.services.crowd_workers import crowd_worker_get_or_create
from runs.audit import audit_event_record

Status = QualificationResult.Status


def _provider() -> mturk.MTurkProvider:
    provider = get_provider(Provider.MTURK)
    assert isinstance(provider, mturk.MTurkProvider)
    return provider


def mturk_qualifications_sync(*, batch: Batch, now: datetime | None = None) -> int:
    """Record MTurk's score of every worker on each qualification `batch` requires (that has its
    QualificationType); returns how many results changed. Each change is audited as a grade."""
    changed = 0
    provider = _provider()
    for qualification in batch.qualifications.exclude(mturk_qualification_type_id="").order_by("name"):
        scores = provider.qualification_scores(qualification.mturk_qualification_type_id)
        for worker_id, (score, granted_at) in sorted(scores.items()):
            changed += _score_record(qualification, worker_id, score, granted_at or now or timezone.now())
    return changed


def _score_record(qualification: Qualification, worker_id: str, score: int | None, when: datetime) -> bool:
    """Record `score` (percent right; None: revoked there, a fail) of MTurk worker `worker_id`."""
    worker = crowd_worker_get_or_create(provider=Provider.MTURK, external_id=worker_id)
    items = qualification.items.count()
    passed = score is not None and score >= required_score(qualification)
    accuracy = None if score is None else score / 100
    with transaction.atomic():
        result, _ = QualificationResult.objects.get_or_create(qualification=qualification, worker=worker)
        result = QualificationResult.objects.select_for_update().get(pk=result.pk)
        status = Status.PASSED if passed else Status.FAILED
        if result.status == status and result.accuracy == accuracy:
            return False
        result.status = status
        result.items = items
        result.accuracy = accuracy
        result.correct = round((accuracy or 0.0) * items)
        result.decided_at = when
        result.save(update_fields=["items", "correct", "accuracy", "status", "decided_at"])
        audit_event_record(
            project=qualification.project,
            action="qualification",
            subject=f"crowd worker {worker} on qualification {qualification.name}",
            details={
                "change": "grade",
                "status": status,
                "items": result.items,
                "correct": result.correct,
                "mturk_score": score,
            },
        )
    return True
