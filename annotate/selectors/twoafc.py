"""Reads of 2AFC batches: what a trial shows (its references under its condition and its two queries, served
under the assignment's id only), the answered trials, and the batch's results (`agreement.twoafc`)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from agreement import twoafc
from annotate.models import Assignment, Batch, Task
from annotate.selectors.comparison import (
    comparison_cached,
    comparison_summarize,
    run_comparison_input,
    unit_key,
)
from runs.featviz import featviz_keys
from runs.models import DissectionRun, Unit, UnitImage

NATURAL = ("natural", "both", twoafc.CATCH)
FEATVIZ = ("featviz", "both")
RESULT_TABLES = ("twoafc_conditions", "twoafc_differences", "twoafc_units")
"""The 2AFC tables of a batch's comparison, as the exports and `compare` name them."""


@dataclass(frozen=True)
class TrialView:
    """What a worker's trial page shows: how many references of each kind (served by number) and nothing
    else about the unit or the pair."""

    natural: int
    featviz: int


def trial_view(*, assignment: Assignment) -> TrialView:
    condition = assignment.trial.get("condition", "")
    task = assignment.task
    references = int(task.twoafc.get("references", 0))
    natural = min(references, task.unit.images.count()) if condition in NATURAL else 0
    featviz = len(featviz_keys(unit=task.unit)) if condition in FEATVIZ else 0
    return TrialView(natural=natural, featviz=featviz)


def trial_natural_image(*, assignment: Assignment, number: int) -> UnitImage | None:
    """Natural reference `number` (0-based) when the trial shows natural references, else None."""
    if not 0 <= number < trial_view(assignment=assignment).natural:
        return None
    return assignment.task.unit.images.filter(rank=number).first()


def trial_featviz_key(*, assignment: Assignment, number: int) -> str | None:
    """The storage key of feature visualization `number` when the trial shows them, else None."""
    if assignment.trial.get("condition") not in FEATVIZ:
        return None
    keys = featviz_keys(unit=assignment.task.unit)
    return keys[number] if 0 <= number < len(keys) else None


def trial_query_png(*, assignment: Assignment, side: str) -> bytes | None:
    """The query image on `side` (left or right) as a fresh PNG (no name, no metadata), or None."""
    if side not in (twoafc.LEFT, twoafc.RIGHT) or not assignment.trial:
        return None
    pair = assignment.task.twoafc
    row = pair["strong"] if side == assignment.trial["strong_side"] else pair["weak"]
    return probe_image_png(run=assignment.task.unit.run, row=int(row))


def probe_image_png(*, run: DissectionRun, row: int) -> bytes | None:
    """Probe-set image `row` of the run, re-encoded as PNG; None when the run has no probe set."""
    from PIL import Image

    from dissection.broden import load_probe_set
    from runs.storage import probe_set_root

    if run.probe_set is None:
        return None
    probe = load_probe_set(probe_set_root(run.probe_set))
    if not 0 <= row < len(probe):
        return None
    buffer = io.BytesIO()
    Image.fromarray(probe.load_image(row)).save(buffer, format="PNG")
    return buffer.getvalue()


def _answered(batch: Batch) -> QuerySet[Assignment]:
    return (
        Assignment.objects.filter(
            task__batch=batch,
            task__kind=Task.Kind.TWOAFC,
            verified=True,
            status__in=(Assignment.Status.SUBMITTED, Assignment.Status.APPROVED),
            annotation__isnull=False,
        )
        .select_related("task__unit__run", "worker", "annotation")
        .order_by("task__position", "submitted_at", "pk")
    )


def batch_trial_records(*, batch: Batch) -> list[twoafc.TrialRecord]:
    """Every counted answer of the batch (submitted or approved, verified) as a trial record."""
    return [
        twoafc.TrialRecord(
            unit=unit_key(a.task.unit),
            layer=a.task.unit.layer,
            condition=a.trial["condition"],
            correct=bool(a.annotation.correct),
            confidence=int(a.annotation.confidence or 0),
            reaction_ms=int(a.annotation.reaction_ms or 0),
            worker=a.worker.external_id,
        )
        for a in _answered(batch)
    ]


def _concept_matches(run: DissectionRun) -> dict[str, bool | None]:
    """unit key -> whether the human consensus word of the run's label answers is the dissection label:
    from the run's stored comparison, else computed (without intervals)."""
    stored = comparison_cached(run=run, aggregation="dawid_skene")
    summary = (
        stored.summary
        if stored is not None
        else comparison_summarize(data=run_comparison_input(run=run), n_resamples=1)
    )
    return {row["unit_key"]: row["concept_match"] for row in summary["tables"]["units"] if row["answers"]}


def twoafc_results(*, batch: Batch, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The batch's 2AFC results: proportion correct per layer and condition (Wilson intervals), differences
    between conditions (unit bootstrap), per unit whether people could predict it beside its IoU and
    whether its human and automatic labels agree, and the catch trials' pass rate."""
    conditions = list(batch.twoafc.get("conditions", []))
    records = batch_trial_records(batch=batch)
    units: dict[str, Unit] = {
        unit_key(task.unit): task.unit
        for task in batch.tasks.filter(is_gold=False).select_related("unit__run").order_by("position")
    }
    runs = {unit.run for unit in units.values()}
    matches: dict[str, bool | None] = {}
    for run in runs:
        matches.update(_concept_matches(run))
    per_unit = {row["unit"]: row for row in twoafc.unit_table(records)}
    unit_rows = []
    for key, unit in units.items():
        row = per_unit.get(key, {"trials": 0, "correct_trials": 0, "proportion_correct": None})
        unit_rows.append(
            {
                "unit_key": key,
                "layer": unit.layer,
                "trials": row["trials"],
                "correct_trials": row["correct_trials"],
                "proportion_correct": row["proportion_correct"],
                "ci_low": row.get("ci_low"),
                "ci_high": row.get("ci_high"),
                "predictable": row.get("predictable", False),
                "iou": unit.iou,
                "auto_label": unit.label,
                "human_agrees": matches.get(key),
            }
        )
    catch = [r for r in records if r.condition == twoafc.CATCH]
    return {
        "settings": dict(batch.twoafc),
        "trials": len(records) - len(catch),
        "catch": {"trials": len(catch), "passed": sum(r.correct for r in catch)},
        "tables": {
            "twoafc_conditions": twoafc.condition_table(records, conditions=conditions),
            "twoafc_differences": twoafc.condition_differences(
                records, conditions=conditions, n_resamples=n_resamples, seed=seed
            ),
            "twoafc_units": unit_rows,
        },
    }
