"""The audit trail: every requester decision (publish, pause, cancel, approve, reject, bonus, block,
qualification change, launch run, cancel run, export), with who, when, what and the provider's reply.

`audit_event_record` is called by the service that makes the decision, inside that decision's transaction,
so a decision and its record are stored together or not at all. A decision the provider refused changes
nothing and leaves no record (the requester sees the error). Both `runs` and `annotate` record here; the
reads are scoped like every other page (`runs.access`).
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TextIO

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from runs.models import AuditEvent, DissectionRun, Project

Action = AuditEvent.Action
CSV_FIELDS = ("at", "who", "action", "subject", "batch", "run", "details", "provider_reply")
# Spreadsheet programs run cells that start with these as formulas; worker and provider text stays text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def audit_event_record(
    *,
    project: Project,
    action: str,
    subject: str,
    actor: Any = None,
    batch_key: uuid.UUID | None = None,
    run: DissectionRun | None = None,
    details: dict[str, Any] | None = None,
    provider_reply: Any = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one decision to the trail; must be called inside the decision's own transaction.

    `actor` is the requester (None: a rule the requester set, e.g. automatic rejection of failed gold, or a
    command). `details` and `provider_reply` must be JSON values.
    """
    if action not in Action.values:
        raise ValueError(f"unknown audit action {action!r}; expected one of {', '.join(Action.values)}")
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_event_record must run inside the transaction of the decision it records")
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        project=project,
        actor=user,
        actor_name=user.get_username() if user is not None else "",
        at=at or timezone.now(),
        action=action,
        batch_key=batch_key,
        run=run,
        subject=subject[:300],
        details=_json(details or {}),
        provider_reply=_json(provider_reply),
    )


def _json(value: Any) -> Any:
    """`value` as plain JSON (decimals and ids become strings), so the JSON column stores exactly it."""
    return json.loads(json.dumps(value, default=str))


def audit_events(
    *, user: Any, batch_key: uuid.UUID | None = None, project: Project | None = None
) -> QuerySet[AuditEvent]:
    """The events `user` may see, newest first: of one batch, of one project, or all of theirs."""
    events = AuditEvent.objects.visible_to(user).select_related("run")
    if batch_key is not None:
        events = events.filter(batch_key=batch_key)
    if project is not None:
        events = events.filter(project=project)
    return events


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def audit_csv_write(events: Iterable[AuditEvent], stream: TextIO) -> None:
    """Write `events` as CSV, one row per decision (JSON columns as JSON text)."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for event in events:
        writer.writerow(
            [
                _cell(value)
                for value in (
                    event.at.isoformat(),
                    event.actor_name or "automatic",
                    event.action,
                    event.subject,
                    str(event.batch_key) if event.batch_key else "",
                    event.run.name if event.run else "",
                    event.details,
                    event.provider_reply,
                )
            ]
        )
