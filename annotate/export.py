"""Batch export as CSV or JSON, shared by the review page and `manage.py export_batch`: one row per answer,
with what is needed to trace it (the unit by its number, channel and layer, the probe images shown in the
order shown, the images ticked by the numbers on the tiles, the dissection's label and IoU) and the
requester's decisions on it.

Numbering (the project's one convention): `unit` is NetDissect's 1-based unit number of tally.csv
(channel + 1), `channel` the 0-based channel; images are numbered 1..k as on the worker's tiles and the unit
page.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any, TextIO

from django.db.models import Prefetch

from annotate.models import Assignment, Batch
from runs.models import AuditEvent, UnitImage

FORMATS = ("csv", "json")
# Spreadsheet programs run cells that start with these as formulas; worker text must stay text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

EXPORT_FIELDS = (
    "batch",
    "batch_title",
    "task",
    "task_number",
    "task_kind",
    "run",
    "layer",
    "unit",
    "channel",
    "unit_db_id",
    "automatic_label",
    "automatic_category",
    "iou",
    "interpretable",
    "gold",
    "candidate_label",
    "candidate_source",
    "worker",
    "worker_label",
    "provider",
    "assignment",
    "verified",
    "words",
    "category",
    "verify_answer",
    "condition",
    "choice",
    "strong_side",
    "correct",
    "confidence",
    "reaction_ms",
    "query_images",
    "images_shown",
    "shown_images",
    "shown_tiles",
    "images_not_fitting",
    "precision",
    "time_spent_ms",
    "gold_passed",
    "status",
    "accepted_at",
    "submitted_at",
    "reviewed_at",
    "feedback",
    "bonus",
    "decisions",
    "worker_blocked",
)
"""The columns, in order. `unit` = channel + 1 (tally.csv's unit); `unit_db_id` the id of the unit page
(/units/<id>/); `task_number` the task's place in the batch (1..n); `shown_images` the probe-set paths of the
images shown, in the order shown (image 1 first), `shown_tiles` the stored highlighted tiles of the same
images; `images_not_fitting` the numbers (1..k, as on the tiles) of the images the worker ticked as not
showing the concept; `status` the current decision (submitted, approved, rejected), `reviewed_at`, `feedback`
and `bonus` what the requester decided and when; `decisions` every decision on the answer, oldest first, from
the audit trail (`at`, `by`, `action`: approve, reject or bonus, and its feedback, rejection category or
amount and reason), with bonuses after the approval. `worker_label` is the name a local worker typed (shown,
never trusted); `verified` false marks an answer the provider has not confirmed yet, which no statistic
counts. A 2AFC trial's `condition` (natural, featviz, both, none, or catch), the worker's `choice` (left or
right), the `strong_side` it was shown on, whether the choice was `correct`, its `confidence` (1-3),
`reaction_ms` from serving the trial to the answer (measured by the server) and `query_images` (the probe rows
of the strong then the weak query); empty for other tasks."""


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


_DECISIONS = (AuditEvent.Action.APPROVE, AuditEvent.Action.REJECT, AuditEvent.Action.BONUS)


def _decisions(batch: Batch) -> dict[str, list[dict[str, Any]]]:
    """The batch's review decisions from the audit trail, oldest first, by assignment public id (which
    `annotate.services.review` keeps in each decision's details)."""
    found: dict[str, list[dict[str, Any]]] = {}
    events = AuditEvent.objects.filter(batch_key=batch.public_id, action__in=_DECISIONS).order_by("at", "pk")
    for event in events:
        details = dict(event.details)
        assignment = details.pop("assignment", None)
        if assignment:
            found.setdefault(str(assignment), []).append(
                {"at": event.at.isoformat(), "by": event.actor_name or "automatic", "action": event.action}
                | details
            )
    return found


def batch_export_rows(*, batch: Batch) -> list[dict[str, Any]]:
    """One row per assignment that has an answer or a decision (returned, expired and open ones carry none),
    in task order."""
    numbers = {pk: n for n, pk in enumerate(batch.tasks.order_by("position").values_list("pk", flat=True), 1)}
    assignments = (
        Assignment.objects.filter(task__batch=batch, status__in=Assignment.DONE)
        .select_related("task__unit__run", "worker", "annotation")
        .prefetch_related(Prefetch("task__unit__images", queryset=UnitImage.objects.order_by("rank")))
        .order_by("task__position", "submitted_at", "pk")
    )
    decisions = _decisions(batch)
    rows = []
    for a in assignments:
        task, unit = a.task, a.task.unit
        annotation = getattr(a, "annotation", None)
        shown_count = annotation.shown_count if annotation else batch.images_per_task
        shown = list(unit.images.all())[:shown_count]
        rows.append(
            {
                "batch": str(batch.public_id),
                "batch_title": batch.title,
                "task": str(task.public_id),
                "task_number": numbers[task.pk],
                "task_kind": task.kind,
                "run": unit.run.name,
                "layer": unit.layer,
                "unit": unit.number,
                "channel": unit.channel,
                "unit_db_id": unit.pk,
                "automatic_label": unit.label,
                "automatic_category": unit.concept_category,
                "iou": unit.iou,
                "interpretable": unit.interpretable,
                "gold": task.is_gold,
                "candidate_label": task.candidate_label,
                "candidate_source": task.candidate_source,
                "worker": a.worker.external_id,
                "worker_label": a.worker.label,
                "provider": a.worker.provider,
                "assignment": str(a.public_id),
                "verified": a.verified,
                "words": annotation.words if annotation else "",
                "category": annotation.category if annotation else "",
                "verify_answer": annotation.verify_answer if annotation else None,
                "condition": a.trial.get("condition", ""),
                "choice": annotation.choice if annotation else "",
                "strong_side": a.trial.get("strong_side", ""),
                "correct": annotation.correct if annotation else None,
                "confidence": annotation.confidence if annotation else None,
                "reaction_ms": annotation.reaction_ms if annotation else None,
                "query_images": [task.twoafc["strong"], task.twoafc["weak"]] if task.twoafc else [],
                "images_shown": len(shown),
                "shown_images": [image.source_image for image in shown],
                "shown_tiles": [image.image.name for image in shown],
                "images_not_fitting": [rank + 1 for rank in annotation.rejected_ranks] if annotation else [],
                "precision": annotation.precision if annotation else None,
                "time_spent_ms": annotation.time_spent_ms if annotation else None,
                "gold_passed": a.gold_passed,
                "status": a.status,
                "accepted_at": _iso(a.accepted_at),
                "submitted_at": _iso(a.submitted_at),
                "reviewed_at": _iso(a.reviewed_at),
                "feedback": a.feedback,
                "bonus": str(a.bonus),
                "decisions": decisions.get(str(a.public_id), []),
                "worker_blocked": a.worker.blocked,
            }
        )
    return rows


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: numbers of a list space-separated ("10 12"), a list of text as a JSON array
    (a path may hold spaces), None empty, and text that a spreadsheet would run as a formula quoted."""
    if isinstance(value, list):
        if all(isinstance(v, int | float) for v in value):
            return " ".join(str(v) for v in value)
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_rows(rows: Sequence[dict[str, Any]], stream: TextIO, fmt: str) -> None:
    """Write `rows` (from batch_export_rows) to `stream` as `fmt` (csv or json)."""
    if fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: csv_cell(row[key]) for key in EXPORT_FIELDS})
    elif fmt == "json":
        json.dump(list(rows), stream, indent=2)
        stream.write("\n")
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
