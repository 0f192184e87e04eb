"""Crowd workers: created on first sight (provider ids) or afresh (the local link), blocked here and at their
provider."""

from __future__ import annotations

import logging
import secrets

from django.db import IntegrityError, transaction

from annotate.errors import (
    InvalidAnswer,
    ReviewError,
)
from annotate.models import Assignment, CrowdWorker
from annotate.providers import get_provider

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


def crowd_worker_block(*, worker: CrowdWorker, reason: str) -> CrowdWorker:
    """Block `worker` here and at their provider; their unsubmitted assignments are returned."""
    reason = reason.strip()
    if not reason:
        raise ReviewError("Blocking needs a reason.")
    with transaction.atomic():
        locked = CrowdWorker.objects.select_for_update().get(pk=worker.pk)
        if not locked.blocked:
            get_provider(locked.provider).block(locked, reason)
        locked.blocked = True
        locked.blocked_reason = reason
        locked.save(update_fields=["blocked", "blocked_reason"])
        Assignment.objects.filter(worker=locked, status=Status.ACCEPTED).update(
            status=Status.RETURNED, slot=None
        )
    return locked


def random_worker_id() -> str:
    """An id nobody can guess (64 random bits), for workers whose provider gives them none."""
    return f"worker-{secrets.token_hex(8)}"
