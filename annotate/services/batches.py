"""Batches: create from units (with gold units), publish, pause, cancel, and reconcile with the provider."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from agreement import categories
from agreement.records import DEFAULT_MIN_ANSWERS
from annotate.errors import (
    InvalidAnswer,
    ReviewError,
)
from annotate.models import Assignment, Batch, Provider, Task
from annotate.providers import RemoteAssignment, SyncResult, get_provider
from annotate.services.assignments import AUTO_REJECT_FEEDBACK, assignment_verify
from annotate.services.comparison import comparison_inputs_changed
from annotate.services.mturk import mturk_qualifications_sync
from annotate.services.prolific import prolific_batch_sync
from runs.access import may_use_project
from runs.audit import audit_event_record
from runs.errors import RunError
from runs.models import Project, Unit
from runs.services import unit_tiles_ensure

log = logging.getLogger(__name__)
Status = Assignment.Status


@dataclass(frozen=True)
class GoldAnswer:
    category: str
    words: tuple[str, ...]


def batch_create(
    *,
    title: str,
    units: Sequence[Unit],
    instructions: str = "",
    gold: dict[int, GoldAnswer] | None = None,
    provider: str = Provider.LOCAL,
    assignments_per_task: int = 3,
    images_per_task: int = 20,
    reward: Decimal = Decimal("0.10"),
    assignment_duration: timedelta = timedelta(minutes=30),
    lifetime: timedelta = timedelta(days=7),
    auto_reject_failed_gold: bool = False,
    show_featviz: bool = False,
    block_below_accuracy: float | None = None,
    block_min_gold: int = 2,
    prolific_completion_code: str = "",
    min_answers: int = DEFAULT_MIN_ANSWERS,
    project: Project | None = None,
    created_by: Any = None,
) -> Batch:
    """A draft batch with one label task per unit; `gold` maps unit pk to its known answer.

    Gold units not in `units` are added; tasks are ordered as given, so gold units sit among the others.
    The batch belongs to its units' project (`project`, when given, must be it), so every unit comes from
    one project, and `created_by` must be a member of it.
    """
    gold = gold or {}
    if not title.strip():
        raise InvalidAnswer("Title: a batch needs a title.")
    unit_list = list(dict.fromkeys(units))
    by_pk = {unit.pk: unit for unit in unit_list}
    missing_gold = [pk for pk in gold if pk not in by_pk]
    extra = list(Unit.objects.filter(pk__in=missing_gold).order_by("layer", "channel"))
    if len(extra) != len(missing_gold):
        raise InvalidAnswer("Gold units: a gold unit does not exist.")
    unit_list += extra
    if not unit_list:
        raise InvalidAnswer("Units: the selection is empty.")
    projects = set(
        Unit.objects.filter(pk__in=[u.pk for u in unit_list]).values_list("run__project", flat=True)
    )
    if len(projects) > 1 or (project is not None and projects != {project.pk}):
        raise InvalidAnswer("Units: a batch holds units of its own project only.")
    owner = project or Project.objects.get(pk=projects.pop())
    if not may_use_project(created_by, owner):
        raise InvalidAnswer(f"Project: you are not a member of project {owner.name!r}.")
    for answer in gold.values():
        if answer.category not in categories.CODES:
            raise InvalidAnswer(
                f"Gold units: category {answer.category!r} is not one of {', '.join(categories.CODES)}."
            )
        if not [w for w in answer.words if w.strip()]:
            raise InvalidAnswer("Gold units: every gold unit needs at least one accepted word.")
    if provider not in Provider.values:
        raise InvalidAnswer(f"Provider: {provider!r} is not one of {', '.join(Provider.values)}.")
    try:  # the units' full-size tiles, made once and before the batch exists (storage I/O, no lock held)
        unit_tiles_ensure(unit_ids=[unit.pk for unit in unit_list])
    except RunError as exc:
        raise InvalidAnswer(f"Units: {exc}") from None
    with transaction.atomic():
        batch = Batch(
            project=owner,
            title=title.strip(),
            instructions=instructions,
            provider=provider,
            assignments_per_task=assignments_per_task,
            images_per_task=images_per_task,
            reward=reward,
            assignment_duration=assignment_duration,
            lifetime=lifetime,
            auto_reject_failed_gold=auto_reject_failed_gold,
            show_featviz=show_featviz,
            block_below_accuracy=block_below_accuracy,
            block_min_gold=block_min_gold,
            prolific_completion_code=prolific_completion_code.strip(),
            min_answers=min_answers,
            created_by=created_by,
        )
        batch.full_clean()
        batch.save()
        Task.objects.bulk_create(
            [
                Task(
                    batch=batch,
                    unit=unit,
                    position=position,
                    is_gold=unit.pk in gold,
                    gold_category=gold[unit.pk].category if unit.pk in gold else "",
                    gold_words=[w.strip() for w in gold[unit.pk].words if w.strip()]
                    if unit.pk in gold
                    else [],
                )
                for position, unit in enumerate(unit_list)
            ]
        )
    return batch


def _audit(batch: Batch, action: str, actor: Any, reply: Any) -> None:
    audit_event_record(
        project=batch.project,
        action=action,
        actor=actor,
        batch_key=batch.public_id,
        subject=f"batch {batch.title!r} ({batch.get_provider_display()})",
        details={"state": batch.state},
        provider_reply=reply,
    )


def batch_publish(*, batch: Batch, now: datetime | None = None, actor: Any = None) -> Batch:
    """Open a draft or paused batch to workers; the provider publishes first (idempotently). `actor`, the
    requester, is recorded in the audit trail with the provider's reply."""
    if batch.state not in (Batch.State.DRAFT, Batch.State.PAUSED):
        raise ReviewError(f"A {batch.get_state_display().lower()} batch cannot be published.")
    if not batch.tasks.exists():
        raise ReviewError("This batch has no tasks.")
    now = now or timezone.now()
    provider = get_provider(batch.provider)
    provider.check_publishable(batch)
    if batch.expires_at is None:
        Batch.objects.filter(pk=batch.pk).update(expires_at=now + batch.lifetime)
        batch.expires_at = now + batch.lifetime
    reply = provider.publish(batch)
    with transaction.atomic():
        batch.state = Batch.State.PUBLISHED
        batch.published_at = batch.published_at or now
        batch.save(update_fields=["state", "published_at", "updated_at"])
        _audit(batch, "publish", actor, reply)
    return batch


def batch_pause(*, batch: Batch, actor: Any = None) -> Batch:
    """Stop handing out tasks; accepted assignments may still be submitted."""
    if batch.state != Batch.State.PUBLISHED:
        raise ReviewError("Only a published batch can be paused.")
    reply = get_provider(batch.provider).pause(batch)
    with transaction.atomic():
        batch.state = Batch.State.PAUSED
        batch.save(update_fields=["state", "updated_at"])
        _audit(batch, "pause", actor, reply)
    return batch


def batch_cancel(*, batch: Batch, actor: Any = None) -> Batch:
    """Close the batch for good; unsubmitted assignments are returned, submitted ones stay reviewable."""
    if batch.state in (Batch.State.CANCELLED, Batch.State.FINISHED):
        raise ReviewError(f"This batch is already {batch.get_state_display().lower()}.")
    reply = get_provider(batch.provider).cancel(batch) if batch.state != Batch.State.DRAFT else None
    with transaction.atomic():
        batch.state = Batch.State.CANCELLED
        batch.save(update_fields=["state", "updated_at"])
        Assignment.objects.filter(task__batch=batch, status=Status.ACCEPTED).update(
            status=Status.RETURNED, slot=None
        )
        _audit(batch, "cancel", actor, reply)
    return batch


def batch_export_record(*, batch: Batch, what: str, rows: int, actor: Any = None) -> None:
    """Record in the audit trail that `actor` exported `what` (e.g. "answers as csv") of `batch`."""
    with transaction.atomic():
        audit_event_record(
            project=batch.project,
            action="export",
            actor=actor,
            batch_key=batch.public_id,
            subject=f"batch {batch.title!r}: {what}",
            details={"rows": rows},
        )


def batch_sync(*, batch: Batch) -> SyncResult:
    """Reconcile assignment states with the batch's provider: confirm the assignments it reports for the
    same worker and HIT (`assignment_verify`), push decisions made here that the provider has not seen,
    mirror decisions made there. The provider only reports what it holds; the rules are here (Prolific's,
    whose records are whole sessions, in `annotate.services.prolific`). An MTurk sync also records MTurk's
    scores of the qualification tests the batch requires (`annotate.services.mturk`)."""
    if batch.provider == Provider.PROLIFIC:
        return prolific_batch_sync(batch=batch)
    provider = get_provider(batch.provider)
    result = SyncResult()
    for remote in provider.remote_assignments(batch):
        result.seen += 1
        _reconcile(provider, batch, remote, result)
    if batch.provider == Provider.MTURK:
        mturk_qualifications_sync(batch=batch)
    return result


_DECIDED = {RemoteAssignment.APPROVED: Status.APPROVED, RemoteAssignment.REJECTED: Status.REJECTED}


def _reconcile(provider: Any, batch: Batch, remote: RemoteAssignment, result: SyncResult) -> None:
    local = (
        Assignment.objects.filter(mturk_assignment_id=remote.external_id, task__batch=batch)
        .select_related("worker", "task")
        .first()
    )
    if local is None:
        result.unknown.append(remote.external_id)
        return
    if not local.verified:
        if not assignment_verify(assignment=local, remote=remote):
            result.mismatched.append(remote.external_id)
            return
        result.verified += 1
        local.refresh_from_db()
    if remote.status == RemoteAssignment.SUBMITTED and local.status in (Status.APPROVED, Status.REJECTED):
        if local.status == Status.APPROVED:
            provider.approve(local, local.feedback)
        else:
            provider.reject(local, local.feedback or AUTO_REJECT_FEEDBACK)
        result.pushed += 1
    elif remote.status in _DECIDED and local.status == Status.SUBMITTED:
        local.status = _DECIDED[remote.status]
        local.reviewed_at = timezone.now()
        if local.status == Status.REJECTED:
            local.slot = None
            local.feedback = remote.feedback or local.feedback
        local.save(update_fields=["status", "slot", "feedback", "reviewed_at"])
        comparison_inputs_changed(unit_ids=[local.task.unit_id])
        result.updated += 1
