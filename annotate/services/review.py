"""A requester's review: approve, reject and pay bonuses, here and at the batch's provider."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from annotate import selectors
from annotate.errors import (
    ReviewError,
)
from annotate.models import Assignment, Batch
from annotate.providers import ProviderError, get_provider

log = logging.getLogger(__name__)
Status = Assignment.Status


def _lock_for_review(assignment: Assignment) -> Assignment:
    return (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("task__batch", "worker")
        .get(pk=assignment.pk)
    )


def batch_refresh_state(*, batch: Batch) -> Batch:
    """A published batch whose every slot holds an approved answer is finished."""
    if batch.state == Batch.State.PUBLISHED and selectors.batch_is_complete(batch=batch):
        batch.state = Batch.State.FINISHED
        batch.save(update_fields=["state", "updated_at"])
    return batch


def assignment_approve(
    *, assignment: Assignment, feedback: str = "", now: datetime | None = None
) -> Assignment:
    """Approve a submitted answer here and at the provider (which pays the worker)."""
    with transaction.atomic():
        locked = _lock_for_review(assignment)
        if locked.status != Status.SUBMITTED:
            raise ReviewError(
                f"Only submitted assignments can be approved; this one is "
                f"{locked.get_status_display().lower()}."
            )
        get_provider(locked.task.batch.provider).approve(locked, feedback.strip())
        locked.status = Status.APPROVED
        locked.feedback = feedback.strip()
        locked.reviewed_at = now or timezone.now()
        locked.save(update_fields=["status", "feedback", "reviewed_at"])
        batch_refresh_state(batch=locked.task.batch)
    return locked


def assignment_reject(*, assignment: Assignment, feedback: str, now: datetime | None = None) -> Assignment:
    """Reject a submitted answer (feedback required); its slot goes back so the unit still gets answers."""
    feedback = feedback.strip()
    if not feedback:
        raise ReviewError("Rejecting needs feedback that tells the worker why.")
    with transaction.atomic():
        locked = _lock_for_review(assignment)
        if locked.status != Status.SUBMITTED:
            raise ReviewError(
                f"Only submitted assignments can be rejected; this one is "
                f"{locked.get_status_display().lower()}."
            )
        get_provider(locked.task.batch.provider).reject(locked, feedback)
        locked.status = Status.REJECTED
        locked.slot = None
        locked.feedback = feedback
        locked.reviewed_at = now or timezone.now()
        locked.save(update_fields=["status", "slot", "feedback", "reviewed_at"])
    return locked


def assignment_send_bonus(*, assignment: Assignment, amount: Decimal, reason: str) -> Assignment:
    """Pay `amount` on top of the reward for a submitted or approved assignment the provider confirmed.

    The provider pays once per assignment (MTurk: its UniqueRequestToken), so a retry after a failed save
    records the bonus without paying it twice.
    """
    reason = reason.strip()
    if amount <= 0:
        raise ReviewError("A bonus must be more than 0.00.")
    if not reason:
        raise ReviewError("A bonus needs a reason the worker will see.")
    with transaction.atomic():
        locked = _lock_for_review(assignment)
        if locked.status not in (Status.SUBMITTED, Status.APPROVED):
            raise ReviewError("Only submitted or approved assignments can get a bonus.")
        if not locked.verified:
            raise ReviewError(
                "The provider has not confirmed this assignment yet, so it gets no bonus; sync the batch "
                "first."
            )
        if locked.bonus > 0:
            raise ReviewError("This assignment already got a bonus.")
        get_provider(locked.task.batch.provider).bonus(locked, amount, reason)
        locked.bonus = amount
        locked.save(update_fields=["bonus"])
    return locked


@dataclass
class ReviewOutcome:
    done: int = 0
    errors: list[str] = field(default_factory=list)


def assignments_review(
    *, assignments: Iterable[Assignment], action: str, feedback: str = "", amount: Decimal | None = None
) -> ReviewOutcome:
    """Approve, reject or bonus many assignments; each is its own transaction, failures are listed."""
    if action == "reject" and not feedback.strip():
        raise ReviewError("Rejecting needs feedback that tells the worker why.")
    if action == "bonus" and (amount is None or amount <= 0):
        raise ReviewError("A bonus must be more than 0.00.")
    outcome = ReviewOutcome()
    for assignment in assignments:
        try:
            if action == "approve":
                assignment_approve(assignment=assignment, feedback=feedback)
            elif action == "reject":
                assignment_reject(assignment=assignment, feedback=feedback)
            elif action == "bonus":
                assignment_send_bonus(assignment=assignment, amount=amount or Decimal(0), reason=feedback)
            else:
                raise ReviewError(f"Unknown review action {action!r}.")
            outcome.done += 1
        except (ReviewError, ProviderError) as exc:
            outcome.errors.append(
                f"{assignment.worker.external_id} on unit {assignment.task.unit.channel}: {exc}"
            )
    return outcome
