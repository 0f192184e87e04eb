"""Crowd workers: created on first sight (provider ids) or afresh (the local link), blocked here and at their
provider."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from django.db import IntegrityError, transaction

from annotate.errors import (
    InvalidAnswer,
    ReviewError,
)
from annotate.models import Assignment, Batch, CrowdWorker
from annotate.providers import get_provider
from runs.audit import audit_event_record

log = logging.getLogger(__name__)
Status = Assignment.Status


def crowd_worker_get_or_create(*, provider: str, external_id: str) -> CrowdWorker:
    """The worker `external_id` of `provider`, created on first sight (safe under concurrent first visits)."""
    external_id = external_id.strip()
    if not external_id:
        raise InvalidAnswer("A worker id is required.")
    if len(external_id) > 200:
        raise InvalidAnswer("A worker id has at most 200 characters.")
    try:
        with transaction.atomic():
            worker, _ = CrowdWorker.objects.get_or_create(provider=provider, external_id=external_id)
    except IntegrityError:
        worker = CrowdWorker.objects.get(provider=provider, external_id=external_id)
    return worker


def crowd_worker_create(*, provider: str, label: str = "") -> CrowdWorker:
    """A new worker with an unguessable id; `label` is what the person typed, shown beside their answers and
    never used to find them (anyone can type anyone's name), so their personal link is their only key."""
    label = " ".join(label.split())
    if len(label) > 100:
        raise InvalidAnswer("A worker name has at most 100 characters.")
    return CrowdWorker.objects.create(provider=provider, external_id=random_worker_id(), label=label)


def crowd_worker_block(
    *, worker: CrowdWorker, reason: str, actor: Any = None, batch: Batch | None = None
) -> CrowdWorker:
    """Block `worker` here and at their provider; their unsubmitted assignments are returned. The block is
    recorded in the audit trail of `batch`, the batch it was decided from, or else of the batch the worker
    last worked on (`actor` None: by the batch's rule)."""
    reason = reason.strip()
    if not reason:
        raise ReviewError("Blocking needs a reason.")
    with transaction.atomic():
        locked = CrowdWorker.objects.select_for_update().get(pk=worker.pk)
        reply = get_provider(locked.provider).block(locked, reason) if not locked.blocked else None
        _audit(locked, "block", actor, batch, {"reason": reason, "already_blocked": locked.blocked}, reply)
        locked.blocked = True
        locked.blocked_reason = reason
        locked.save(update_fields=["blocked", "blocked_reason"])
        Assignment.objects.filter(worker=locked, status=Status.ACCEPTED).update(
            status=Status.RETURNED, slot=None
        )
    return locked


def _audit(
    locked: CrowdWorker, action: str, actor: Any, batch: Batch | None, details: dict[str, Any], reply: Any
) -> None:
    """Record a decision on `locked` in the audit trail of `batch`, or else of the batch the worker last
    worked on (a worker who never took a task has no batch, and no project, to record it in)."""
    if batch is None:
        last = Assignment.objects.filter(worker=locked).select_related("task__batch").order_by("-pk").first()
        batch = last.task.batch if last is not None else None
    if batch is not None:
        audit_event_record(
            project=batch.project,
            action=action,
            actor=actor,
            batch_key=batch.public_id,
            subject=f"crowd worker {locked}",
            details=details,
            provider_reply=reply,
        )


def crowd_worker_unblock(
    *, worker: CrowdWorker, actor: Any = None, batch: Batch | None = None
) -> CrowdWorker:
    """Let a blocked worker take tasks again, here and at their provider; recorded in the audit trail as a
    block is."""
    with transaction.atomic():
        locked = CrowdWorker.objects.select_for_update().get(pk=worker.pk)
        if not locked.blocked:
            raise ReviewError(f"{locked.external_id} is not blocked.")
        reply = get_provider(locked.provider).unblock(locked)
        _audit(locked, "unblock", actor, batch, {"reason_was": locked.blocked_reason}, reply)
        locked.blocked = False
        locked.blocked_reason = ""
        locked.save(update_fields=["blocked", "blocked_reason"])
    return locked


def random_worker_id() -> str:
    """An id nobody can guess (64 random bits), for workers whose provider gives them none."""
    return f"worker-{secrets.token_hex(8)}"
