"""Prolific's submissions and study, reconciled with the batch: by polling (`prolific_batch_sync`, which
`batch_sync` and `manage.py sync_prolific` use) and by webhook (`prolific_submission_update`,
`prolific_study_update`). Prolific reports; the rules are here.

One submission is one participant's session, so it covers every assignment that carries its id
(`Assignment.prolific_session_id`). A submission the participant returned or let time out frees the slots of
the session's unreviewed assignments (returned or expired here, so the unit still gets its answers); one
approved or rejected in Prolific's own pages is recorded on the session's submitted assignments. A poll also
adds the participants who passed a required qualification to its Prolific participant group.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from annotate.models import Assignment, Batch, Provider, QualificationResult
from annotate.providers import ProviderError, RemoteAssignment, SyncResult, get_provider
from annotate.providers.prolific import client as prolific
from annotate.services.review import batch_refresh_state

log = logging.getLogger(__name__)
Status = Assignment.Status
_RELEASED = {prolific.RETURNED: Status.RETURNED, prolific.TIMED_OUT: Status.EXPIRED}
_DECIDED = {RemoteAssignment.APPROVED: Status.APPROVED, RemoteAssignment.REJECTED: Status.REJECTED}


def _provider() -> prolific.ProlificProvider:
    provider = get_provider(Provider.PROLIFIC)
    assert isinstance(provider, prolific.ProlificProvider)
    return provider


def _submission_apply(batch: Batch, remote: RemoteAssignment, result: SyncResult, now: datetime) -> None:
    with transaction.atomic():
        session = list(
            Assignment.objects.select_for_update(of=("self",))
            .filter(task__batch=batch, prolific_session_id=remote.external_id)
            .select_related("worker")
            .order_by("pk")
        )
        if not session:
            result.unknown.append(remote.external_id)
            return
        if remote.worker_id and any(a.worker.external_id != remote.worker_id for a in session):
            log.warning(
                "Prolific submission %s is not participant %s's here", remote.external_id, remote.worker_id
            )
            result.mismatched.append(remote.external_id)
            return
        changed = 0
        for assignment in session:
            if remote.status in _RELEASED and assignment.status in (Status.ACCEPTED, Status.SUBMITTED):
                assignment.status = _RELEASED[remote.status]
                assignment.slot = None
            elif remote.status in _DECIDED and assignment.status == Status.SUBMITTED:
                assignment.status = _DECIDED[remote.status]
                assignment.reviewed_at = now
                if assignment.status == Status.REJECTED:
                    assignment.slot = None
                    assignment.feedback = assignment.feedback or "Rejected in Prolific."
            else:
                continue
            assignment.save(update_fields=["status", "slot", "reviewed_at", "feedback"])
            changed += 1
        result.updated += changed


def _study_apply(batch: Batch, status: str) -> None:
    """Mirror the study's status: paused or stopped there, the batch takes no new work here; started there
    again, it does."""
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        locked.prolific_study_status = status
        fields = ["prolific_study_status", "updated_at"]
        if locked.state == Batch.State.PUBLISHED and status in (prolific.PAUSED, *prolific.STOPPED):
            locked.state = Batch.State.PAUSED
            fields.append("state")
        elif locked.state == Batch.State.PAUSED and status == prolific.ACTIVE:
            locked.state = Batch.State.PUBLISHED
            fields.append("state")
        locked.save(update_fields=fields)
    batch.refresh_from_db()


def prolific_batch_sync(*, batch: Batch, now: datetime | None = None) -> SyncResult:
    """Read the study and every submission of `batch` from Prolific and reconcile them."""
    result = SyncResult()
    provider = _provider()
    if not provider.connected or not batch.prolific_study_id:
        return result
    now = now or timezone.now()
    _study_apply(batch, provider.study_status(batch))
    for remote in provider.remote_assignments(batch):
        result.seen += 1
        _submission_apply(batch, remote, result, now)
    batch_refresh_state(batch=batch)
    prolific_qualification_groups_sync(batch=batch)
    return result


def prolific_qualification_groups_sync(*, batch: Batch) -> int:
    """Add every Prolific participant who passed a qualification `batch` requires to that qualification's
    participant group, if it names one (one call per qualification; a member added again changes nothing),
    so the requester's other studies can allow just them. Returns how many participants were sent."""
    provider = _provider()
    if not provider.connected:
        return 0
    sent = 0
    for qualification in batch.qualifications.exclude(prolific_group_id="").order_by("name"):
        passed = sorted(
            QualificationResult.objects.filter(
                qualification=qualification,
                status=QualificationResult.Status.PASSED,
                worker__provider=Provider.PROLIFIC,
            ).values_list("worker__external_id", flat=True)
        )
        if passed:
            provider.group_add(qualification.prolific_group_id, passed)
            sent += len(passed)
    return sent


def prolific_batches_sync(*, now: datetime | None = None) -> dict[str, SyncResult | str]:
    """Sync every open Prolific batch (for `manage.py sync_prolific` or a Celery beat schedule); a batch
    whose sync Prolific fails is reported by its error and the others still sync."""
    outcome: dict[str, SyncResult | str] = {}
    open_batches = Batch.objects.filter(
        provider=Provider.PROLIFIC, state__in=[Batch.State.PUBLISHED, Batch.State.PAUSED]
    ).exclude(prolific_study_id="")
    for batch in open_batches.order_by("pk"):
        try:
            outcome[str(batch.public_id)] = prolific_batch_sync(batch=batch, now=now)
        except ProviderError as exc:
            log.warning("could not sync Prolific batch %s: %s", batch.public_id, exc)
            outcome[str(batch.public_id)] = str(exc)
    return outcome


def prolific_submission_update(
    *, submission_id: str, status: str, participant_id: str = "", now: datetime | None = None
) -> SyncResult:
    """A submission's new status as Prolific's webhook tells it; submissions of no batch here are listed
    as unknown."""
    result = SyncResult(seen=1)
    remote = RemoteAssignment(
        external_id=submission_id, status=prolific.remote_status(status), worker_id=participant_id
    )
    batch_ids = set(
        Assignment.objects.filter(prolific_session_id=submission_id, task__batch__provider=Provider.PROLIFIC)
        .values_list("task__batch", flat=True)
        .distinct()
    )
    if not batch_ids:
        result.unknown.append(submission_id)
    for batch in Batch.objects.filter(pk__in=batch_ids):
        _submission_apply(batch, remote, result, now or timezone.now())
        batch_refresh_state(batch=batch)
    return result


def prolific_study_update(*, study_id: str, status: str) -> bool:
    """A study's new status as Prolific's webhook tells it; False when no batch has that study."""
    batch = Batch.objects.filter(provider=Provider.PROLIFIC, prolific_study_id=study_id).first()
    if batch is None or not status:
        return False
    _study_apply(batch, status)
    return True
