"""Reads for the human-versus-automatic comparison: the ORM turned into `agreement.records` records.

A batch's comparison covers the units of its tasks. Label answers come from the batch's own label tasks;
a verification batch (verify tasks only) has none, so its units' label answers come from every label
task on them. Verification answers come from every verify task on the units, in any batch, so a label
batch's dashboard shows the verdicts of the verification batch made from it. A run's comparison covers
its units and every answer on them. A worker who answered a unit more than once counts once, with
their latest answer; rejected answers, abandoned assignments and answers the provider has not confirmed
(unverified MTurk assignments) count never. Units are named by the project's numbering: "conv4 unit 98"
is channel 97, and each links to its unit page.

The dashboard reads its figures from `ComparisonSummary` (see `comparison_cached`); `comparison_fingerprint`
names the inputs those figures depend on, cheaply (a few queries of ids), so a page can tell they are stale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from django.db.models import QuerySet
from django.urls import reverse

from agreement.aggregation import consensus_word
from agreement.broden import BRODEN_CATEGORIES
from agreement.records import DEFAULT_MIN_ANSWERS, SOURCES, Answer, UnitRecord, VerificationAnswer
from agreement.summary import rows_to_csv, summarize
from agreement.words import synonyms_from_label_csv
from annotate.export import csv_cell
from annotate.models import Annotation, Assignment, Batch, ComparisonSummary, Task
from runs.models import DissectionRun, Unit

COUNTED = (Assignment.Status.SUBMITTED, Assignment.Status.APPROVED)
"""Assignments whose answer enters the statistics (a rejected answer was judged unusable)."""
LABEL_CSV = "label.csv"

Aggregation = Literal["dawid_skene", "majority"]
N_RESAMPLES = 1000
"""Bootstrap resamples of the dashboard's intervals."""
SUMMARY_VERSION = 2
"""Part of every fingerprint: raise it when `summarize` or the plots change, so stored figures are redone."""


@dataclass
class ComparisonInput:
    """What `summarize` needs, plus the notes on units left out of part of it."""

    records: list[UnitRecord]
    verification: list[VerificationAnswer]
    synonyms: dict[str, str] | None
    notes: list[str] = field(default_factory=list)
    min_answers: int = DEFAULT_MIN_ANSWERS


def unit_key(unit: Unit, *, with_run: bool = False) -> str:
    """How tables name a unit: "conv4 unit 98" (NetDissect's 1-based unit, channel + 1), prefixed by the
    run's name when units of several runs mix."""
    key = f"{unit.layer} unit {unit.channel + 1}"
    return f"{unit.run.name}/{key}" if with_run else key


def unit_dissection(unit: Unit) -> tuple[str | None, str | None, str | None]:
    """(label, Broden category, note): the dissection label when its category is a Broden one.

    A label with another category (an import's unit.json may say anything) cannot be mapped onto the six
    human categories, so it is left out and the note says so.
    """
    if not unit.label:
        return None, None, None
    if unit.concept_category not in BRODEN_CATEGORIES:
        return (
            None,
            None,
            (
                f"{unit_key(unit)} (channel {unit.channel}) of run {unit.run.name!r}: "
                f"category {unit.concept_category!r} is not a Broden category "
                f"({', '.join(BRODEN_CATEGORIES)}); its dissection label {unit.label!r} is left out"
            ),
        )
    return unit.label, unit.concept_category, None


def run_synonyms(*, run: DissectionRun) -> dict[str, str] | None:
    """The synonym map of the run's probe set's label.csv (`syns` column), when the probe set is a
    local folder.
    """
    if run.probe_set is None or "://" in run.probe_set.path:
        return None
    path = Path(run.probe_set.path) / LABEL_CSV
    if not path.is_file():
        return None
    return synonyms_from_label_csv(path)


def _synonyms(runs: Iterable[DissectionRun], notes: list[str]) -> dict[str, str] | None:
    """The runs' synonym maps merged (the first run wins a clash); an unreadable label.csv becomes a note."""
    merged: dict[str, str] = {}
    for run in runs:
        try:
            merged = {**(run_synonyms(run=run) or {}), **merged}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            notes.append(f"run {run.name!r}: synonyms are not used: {exc}")
    return merged or None


def _latest_per_worker(annotations: Iterable[Annotation]) -> dict[int, dict[int, Annotation]]:
    """unit pk -> worker pk -> that worker's latest counted annotation on the unit."""
    latest: dict[int, dict[int, Annotation]] = {}
    for annotation in annotations:
        assignment = annotation.assignment
        latest.setdefault(assignment.task.unit_id, {})[assignment.worker_id] = annotation
    return latest


def _counted(annotations: QuerySet[Annotation]) -> QuerySet[Annotation]:
    return (
        annotations.filter(assignment__status__in=COUNTED, assignment__verified=True)
        .select_related("assignment__worker", "assignment__task")
        .order_by("assignment__submitted_at", "pk")
    )


def _records(
    units: Sequence[Unit], label_answers: QuerySet[Annotation], notes: list[str]
) -> list[UnitRecord]:
    with_run = len({unit.run_id for unit in units}) > 1
    latest = _latest_per_worker(_counted(label_answers))
    records = []
    for unit in units:
        label, category, note = unit_dissection(unit)
        if note:
            notes.append(note)
        answers = tuple(
            Answer(
                worker=a.assignment.worker.external_id,
                words=a.words,
                category=a.category or None,
                precision=a.precision,
            )
            for a in latest.get(unit.pk, {}).values()
        )
        records.append(
            UnitRecord(
                unit_key=unit_key(unit, with_run=with_run),
                layer=unit.layer,
                auto_label=label,
                auto_category=category,
                iou=unit.iou if label is not None else None,
                answers=answers,
                url=reverse("annotate:unit_detail", args=[unit.pk]),
            )
        )
    return records


def _verify_answers(unit_ids: Iterable[int]) -> QuerySet[Annotation]:
    return _counted(
        Annotation.objects.filter(
            assignment__task__unit__in=list(unit_ids),
            assignment__task__kind=Task.Kind.VERIFY,
            verify_answer__isnull=False,
        )
    )


def _verification(units: Sequence[Unit]) -> list[VerificationAnswer]:
    with_run = len({unit.run_id for unit in units}) > 1
    by_pk = {unit.pk: unit for unit in units}
    answers = _verify_answers(by_pk)
    latest: dict[tuple[int, str, int], Annotation] = {}
    for annotation in answers:
        task = annotation.assignment.task
        latest[(task.unit_id, task.candidate_source, annotation.assignment.worker_id)] = annotation
    return [
        VerificationAnswer(
            unit_key=unit_key(by_pk[unit_id], with_run=with_run),
            layer=by_pk[unit_id].layer,
            source=source,
            worker=annotation.assignment.worker.external_id,
            yes=bool(annotation.verify_answer),
        )
        for (unit_id, source, _), annotation in latest.items()
        if source in SOURCES
    ]


def batch_units(*, batch: Batch) -> list[Unit]:
    """The distinct units of the batch's tasks, in task order."""
    tasks = batch.tasks.select_related("unit__run").order_by("position")
    return list(dict.fromkeys(task.unit for task in tasks))


def _batch_label_answers(batch: Batch, unit_ids: Iterable[int]) -> QuerySet[Annotation]:
    label = Annotation.objects.filter(assignment__task__kind=Task.Kind.LABEL)
    if batch.tasks.filter(kind=Task.Kind.LABEL).exists():
        return label.filter(assignment__task__batch=batch)
    return label.filter(assignment__task__unit__in=list(unit_ids))


def _run_label_answers(run: DissectionRun) -> QuerySet[Annotation]:
    return Annotation.objects.filter(assignment__task__kind=Task.Kind.LABEL, assignment__task__unit__run=run)


def batch_comparison_input(*, batch: Batch) -> ComparisonInput:
    units = batch_units(batch=batch)
    notes: list[str] = []
    records = _records(units, _batch_label_answers(batch, [unit.pk for unit in units]), notes)
    synonyms = _synonyms(dict.fromkeys(unit.run for unit in units), notes)
    return ComparisonInput(records, _verification(units), synonyms, notes, min_answers=batch.min_answers)


def run_comparison_input(*, run: DissectionRun) -> ComparisonInput:
    """A run's units and every answer on them, with the default minimum of answers (a run has no setting)."""
    units = list(run.units.select_related("run").order_by("layer", "channel"))
    notes: list[str] = []
    records = _records(units, _run_label_answers(run), notes)
    return ComparisonInput(records, _verification(units), _synonyms([run], notes), notes)


def comparison_summarize(
    *,
    data: ComparisonInput,
    aggregation: Aggregation = "dawid_skene",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """`summarize` of `data` with its minimum of answers (JSON-ready: the dashboard, the exports and
    `compare` read it)."""
    summary = summarize(
        data.records,
        verification=data.verification,
        synonyms=data.synonyms,
        aggregation=aggregation,
        n_resamples=n_resamples,
        seed=seed,
        min_answers=data.min_answers,
    )
    summary["notes"] = list(data.notes)
    return summary


def _label_csv_state(run_ids: Iterable[int]) -> list[tuple[int, int, int]]:
    """(run, mtime, size) of each run's probe-set label.csv that exists: editing synonyms changes figures."""
    state = []
    for run in DissectionRun.objects.filter(pk__in=set(run_ids)).select_related("probe_set").order_by("pk"):
        if run.probe_set is None or "://" in run.probe_set.path:
            continue
        try:
            stat = (Path(run.probe_set.path) / LABEL_CSV).stat()
        except OSError:
            continue
        state.append((run.pk, stat.st_mtime_ns, stat.st_size))
    return state


def comparison_fingerprint(
    *, batch: Batch | None = None, run: DissectionRun | None = None, aggregation: Aggregation
) -> str:
    """A digest of everything the comparison of `batch` (or `run`) reads: its units and their dissection
    results, the ids of the answers that count (in the order they are read: a rejection, a confirmation or
    a new answer changes them; answers are never edited), the minimum of answers, the aggregation, the
    probe sets' synonyms and `SUMMARY_VERSION`."""
    if (batch is None) == (run is None):
        raise ValueError("comparison_fingerprint takes a batch or a run")
    unit_fields = ("unit_id", "unit__layer", "unit__channel", "unit__label", "unit__concept_category")
    if batch is not None:
        units = list(
            batch.tasks.order_by("position").values_list(
                *unit_fields, "unit__run__name", "unit__iou", "unit__run_id"
            )
        )
        unit_ids = [row[0] for row in units]
        label = _batch_label_answers(batch, unit_ids)
        minimum = batch.min_answers
    else:
        assert run is not None
        units = list(
            run.units.order_by("layer", "channel").values_list(
                "pk", "layer", "channel", "label", "concept_category", "run__name", "iou", "run_id"
            )
        )
        unit_ids = [row[0] for row in units]
        label = _run_label_answers(run)
        minimum = DEFAULT_MIN_ANSWERS
    parts: list[object] = [
        SUMMARY_VERSION,
        aggregation,
        minimum,
        units,
        list(_counted(label).values_list("pk", flat=True)),
        list(_verify_answers(unit_ids).values_list("pk", flat=True)),
        _label_csv_state(row[-1] for row in units),
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def comparison_cached(
    *, batch: Batch | None = None, run: DissectionRun | None = None, aggregation: Aggregation
) -> ComparisonSummary | None:
    """The stored figures of `batch` (or `run`) for `aggregation`, fresh or not; None before the first."""
    return ComparisonSummary.objects.filter(batch=batch, run=run, aggregation=aggregation).first()


def batch_consensus_words(*, batch: Batch) -> dict[int, str]:
    """unit pk -> the human consensus word (normalized, synonyms applied) of the batch's label answers."""
    units = batch_units(batch=batch)
    synonyms = _synonyms(dict.fromkeys(unit.run for unit in units), [])
    latest = _latest_per_worker(
        _counted(
            Annotation.objects.filter(assignment__task__batch=batch, assignment__task__kind=Task.Kind.LABEL)
        )
    )
    words: dict[int, str] = {}
    for unit in units:
        word = consensus_word([a.words for a in latest.get(unit.pk, {}).values()], synonyms=synonyms)
        if word:
            words[unit.pk] = word
    return words


def table_csv(rows: Sequence[dict[str, Any]]) -> str:
    """A summary table as CSV, with worker-typed text that would start a spreadsheet formula quoted."""
    return rows_to_csv([{key: csv_cell(value) for key, value in row.items()} for row in rows])
