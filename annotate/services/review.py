"""A requester's review: approve, reject and pay bonuses, here and at the batch's provider."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from annotate import selectors
from annotate.errors import (
    ReviewError,
)
from annotate.models import Assignment, Batch, BonusPayment
from annotate.providers import ProviderError, get_provider
from annotate.providers.base import Reply
from annotate.services.comparison import comparison_inputs_changed
from runs.audit import audit_event_record

log = logging.getLogger(__name__)
Status = Assignment.Status


def _lock_for_review(assignment: Assignment) -> Assignment:
    return (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("task__batch__project", "task__unit", "worker")
        .get(pk=assignment.pk)
    )


def _audit(locked: Assignment, action: str, actor: Any, details: dict[str, Any], reply: Reply) -> None:
    """Record a decision on `locked` in the audit trail (inside the decision's transaction); `details`
    carries the assignment's public id, by which exports find an answer's decisions."""
    unit = locked.task.unit
    audit_event_record(
        project=locked.task.batch.project,
        action=action,
        actor=actor,
        batch_key=locked.task.batch.public_id,
        subject=f"{locked.worker} on {unit.layer} unit {unit.channel + 1} (assignment {locked.public_id})",
        details={**details, "assignment": str(locked.public_id)},
        provider_reply=reply,
    )


def batch_refresh_state(*, batch: Batch) -> Batch:
    """A published batch whose every slot holds an approved answer is finished."""
    if batch.state == Batch.State.PUBLISHED and selectors.batch_is_complete(batch=batch):
        batch.state = Batch.State.FINISHED
        batch.save(update_fields=["state", "updated_at"])
    return batch


def assignment_approve(
    *, assignment: Assignment, feedback: str = "", now: datetime | None = None, actor: Any = None
) -> Assignment:
    """Approve a submitted answer here and at the provider (which pays the worker)."""
    with transaction.atomic():
        locked = _lock_for_review(assignment)
        if locked.status != Status.SUBMITTED:
            raise ReviewError(
                f"Only submitted assignments can be approved; this one is "
                f"{locked.get_status_display().lower()}."
            )
        reply = get_provider(locked.task.batch.provider).approve(locked, feedback.strip())
        _approved(locked, feedback, now, actor, reply, {})
    return locked


def _approved(
    locked: Assignment, feedback: str, now: datetime | None, actor: Any, reply: Reply, details: dict[str, Any]
) -> None:
    locked.status = Status.APPROVED
    locked.feedback = feedback.strip()
    locked.reviewed_at = now or timezone.now()
    locked.save(update_fields=["status", "feedback", "reviewed_at"])
    _audit(locked, "approve", actor, {"feedback": locked.feedback, **details}, reply)
    batch_refresh_state(batch=locked.task.batch)


def assignment_reject(
    *,
    assignment: Assignment,
    feedback: str,
    now: datetime | None = None,
    actor: Any = None,
    category: str = "",
) -> Assignment:
    """Reject a submitted answer (feedback required); its slot goes back so the unit still gets answers.
    `category` is the rejection category Prolific requires (its message must also be 100 characters)."""
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
        reply = get_provider(locked.task.batch.provider).reject(locked, feedback, category)
        locked.status = Status.REJECTED
        locked.slot = None
        locked.feedback = feedback
        locked.reviewed_at = now or timezone.now()
        locked.save(update_fields=["status", "slot", "feedback", "reviewed_at"])
        _audit(locked, "reject", actor, {"feedback": feedback, "category": category}, reply)
        comparison_inputs_changed(unit_ids=[locked.task.unit_id])
    return locked


def assignment_send_bonus(
    *, assignment: Assignment, amount: Decimal, reason: str, actor: Any = None
) -> Assignment:
    """Pay `amount` on top of the reward for a submitted or approved assignment the provider confirmed.

    A BonusPayment record is written and committed before the provider is asked to pay, and the provider
    call runs outside any transaction, so what it writes on the way (Prolific: paying, before its pay call)
    stays when the call fails. The provider pays once per assignment (MTurk: its UniqueRequestToken;
    Prolific: the record), so a retry never pays twice and a retry after a failed save records the bonus.
    """
    reason = _bonus_reason(amount, reason)
    locked, _ = _bonus_start(assignment, amount, reason)
    reply = get_provider(locked.task.batch.provider).bonus(locked, amount, reason)
    return _bonus_paid(assignment, amount, reason, actor, reply, {})


def _bonus_reason(amount: Decimal, reason: str) -> str:
    reason = reason.strip()
    if amount <= 0:
        raise ReviewError("A bonus must be more than 0.00.")
    if not reason:
        raise ReviewError("A bonus needs a reason the worker will see.")
    return reason


def _bonus_start(assignment: Assignment, amount: Decimal, reason: str) -> tuple[Assignment, BonusPayment]:
    """Check that `assignment` may get the bonus and write (and commit) its BonusPayment record."""
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
        payment, _ = BonusPayment.objects.get_or_create(
            assignment=locked, defaults={"amount": amount, "reason": reason}
        )
        if payment.amount != amount:
            raise ReviewError(
                f"A bonus of {payment.amount} was already started for this assignment; send that amount to "
                "finish it."
            )
    return locked, payment


def _bonus_paid(
    assignment: Assignment, amount: Decimal, reason: str, actor: Any, reply: Reply, details: dict[str, Any]
) -> Assignment:
    """Record a bonus the provider paid (once: a second call finds it recorded)."""
    with transaction.atomic():
        locked = _lock_for_review(assignment)
        if locked.bonus > 0:
            return locked
        locked.bonus = amount
        locked.save(update_fields=["bonus"])
        BonusPayment.objects.filter(assignment=locked).update(
            state=BonusPayment.State.PAID, paid_at=timezone.now()
        )
        _audit(locked, "bonus", actor, {"amount": amount, "reason": reason, **details}, reply)
    return locked


@dataclass
class ReviewOutcome:
    done: int = 0
    errors: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    """Decisions sent to the provider that it has not confirmed yet; the next sync records them."""


def _label(assignment: Assignment) -> str:
    return f"{assignment.worker.external_id} on unit {assignment.task.unit.channel + 1}"


def _approve_in_bulk(
    assignments: list[Assignment], feedback: str, actor: Any, outcome: ReviewOutcome
) -> list[Assignment]:
    """Approve the submitted assignments of providers with a bulk call (Prolific) in one call per batch;
    returns the assignments left to approve one by one. Nothing is approved here that the provider did
    not show approved."""
    left: list[Assignment] = []
    by_batch: dict[int, list[Assignment]] = {}
    fresh = Assignment.objects.select_related("task__batch", "task__unit", "worker").in_bulk(
        [a.pk for a in assignments]
    )
    for assignment in (fresh[a.pk] for a in assignments):
        if assignment.status == Status.SUBMITTED and assignment.verified:
            by_batch.setdefault(assignment.task.batch_id, []).append(assignment)
        else:
            left.append(assignment)
    for group in by_batch.values():
        bulk = get_provider(group[0].task.batch.provider).approve_many(group, feedback.strip())
        if bulk is None:
            left.extend(group)
            continue
        for assignment in group:
            if assignment.pk in bulk.approved:
                with transaction.atomic():
                    locked = _lock_for_review(assignment)
                    if locked.status == Status.SUBMITTED:
                        _approved(locked, feedback, None, actor, bulk.reply, {"bulk": True})
                        outcome.done += 1
            elif assignment.pk in bulk.pending:
                outcome.queued.append(f"{_label(assignment)}: {bulk.pending[assignment.pk]}")
            else:
                reason = bulk.refused.get(assignment.pk, "the provider did not approve it")
                outcome.errors.append(f"{_label(assignment)}: {reason}")
    return left


def _bonus_in_bulk(
    assignments: list[Assignment], amount: Decimal, reason: str, actor: Any, outcome: ReviewOutcome
) -> list[Assignment]:
    """Pay the bonuses of providers with a bulk payment (Prolific) in one set-up and pay call per batch;
    returns the assignments left to pay one by one (those of other providers, and those whose payment an
    earlier try already set up or sent, which the one-by-one path finishes or confirms)."""
    left: list[Assignment] = []
    by_batch: dict[int, list[Assignment]] = {}
    for assignment in assignments:
        try:
            locked, payment = _bonus_start(assignment, amount, reason)
        except ReviewError as exc:
            outcome.errors.append(f"{_label(assignment)}: {exc}")
            continue
        if payment.state == BonusPayment.State.PENDING:
            by_batch.setdefault(locked.task.batch_id, []).append(locked)
        else:
            left.append(assignment)
    for group in by_batch.values():
        bulk = get_provider(group[0].task.batch.provider).bonus_many(group, amount, reason)
        if bulk is None:
            left.extend(group)
            continue
        for assignment in group:
            if assignment.pk in bulk.paid:
                _bonus_paid(assignment, amount, reason, actor, bulk.paid[assignment.pk], {"bulk": True})
                outcome.done += 1
            else:
                reason_refused = bulk.refused.get(assignment.pk, "the provider did not pay it")
                outcome.errors.append(f"{_label(assignment)}: {reason_refused}")
    return left


def assignments_review(
    *,
    assignments: Iterable[Assignment],
    action: str,
    feedback: str = "",
    amount: Decimal | None = None,
    actor: Any = None,
    category: str = "",
) -> ReviewOutcome:
    """Approve, reject or bonus many assignments; each is its own transaction, failures are listed.
    Approvals and bonuses go in one call where the provider has one (Prolific's bulk approve, its bulk bonus
    payment)."""
    if action == "reject" and not feedback.strip():
        raise ReviewError("Rejecting needs feedback that tells the worker why.")
    if action == "bonus" and (amount is None or amount <= 0):
        raise ReviewError("A bonus must be more than 0.00.")
    outcome = ReviewOutcome()
    items = list(assignments)
    try:
        if action == "approve":
            items = _approve_in_bulk(items, feedback, actor, outcome)
        elif action == "bonus" and feedback.strip():
            items = _bonus_in_bulk(items, amount or Decimal(0), feedback.strip(), actor, outcome)
    except ProviderError as exc:
        outcome.errors.append(str(exc))
        return outcome
    for assignment in items:
        try:
            if action == "approve":
                assignment_approve(assignment=assignment, feedback=feedback, actor=actor)
            elif action == "reject":
                assignment_reject(assignment=assignment, feedback=feedback, actor=actor, category=category)
            elif action == "bonus":
                assignment_send_bonus(
                    assignment=assignment, amount=amount or Decimal(0), reason=feedback, actor=actor
                )
            else:
                raise ReviewError(f"Unknown review action {action!r}.")
            outcome.done += 1
        except (ReviewError, ProviderError) as exc:
            outcome.errors.append(f"{_label(assignment)}: {exc}")
    return outcome


def batch_approve_rest(
    *,
    batch: Batch,
    keep: Iterable[Assignment] = (),
    feedback: str = "",
    now: datetime | None = None,
    actor: Any = None,
) -> int:
    """Approve every pending answer of `batch` (submitted and confirmed by the provider) except those in
    `keep`, the ones the requester ticked to reject; returns how many.

    All or nothing: one transaction, so a refusal (a provider error, an answer decided meanwhile) leaves
    every answer as it was here. Approvals a provider already recorded before the refusal are reconciled by
    the next `batch_sync`.
    """
    kept = {assignment.pk for assignment in keep}
    now = now or timezone.now()
    with transaction.atomic():
        pending = list(selectors.batch_pending(batch=batch).exclude(pk__in=kept).order_by("pk"))
        for assignment in pending:
            assignment_approve(assignment=assignment, feedback=feedback, now=now, actor=actor)
    return len(pending)
