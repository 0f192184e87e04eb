"""Reads for the unit page: one unit's top images, concepts, crowd answers, consensus, verification verdicts,
CAM contributions and the batches that hold it.

Every read is scoped: the unit belongs to a run of the user's projects (`unit_visible`), and answers come from
the batches the user may see. The consensus is the unit's row of the comparison (`selectors.comparison`), so
the page and the comparison tables never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.urls import reverse

from agreement.categories import LABELS
from annotate import selectors
from annotate.models import Annotation, Assignment, Batch, Task
from annotate.selectors import comparison
from runs.models import DissectionRun, Unit, UnitImage
from runs.selectors import run_cam_gallery

Status = Assignment.Status
SHOWN = Assignment.DONE
"""Assignments whose answer the unit page lists (returned, expired and open ones carry none)."""


@dataclass(frozen=True)
class UnitAnswer:
    """One worker's answer to a labelling task on the unit, with why it does or does not count."""

    assignment: Assignment
    batch: Batch
    words: str
    category: str
    category_display: str
    not_fitting: frozenset[int]
    """Numbers (1..k, as on the tiles) of the images the worker ticked as not showing the concept."""
    shown: int
    precision: float | None
    counted: bool
    why_not_counted: str

    @property
    def not_fitting_numbers(self) -> list[int]:
        return sorted(self.not_fitting)


@dataclass(frozen=True)
class ImageMark:
    """One image number of the answers table: whether this answer ticked it."""

    number: int
    ticked: bool


@dataclass(frozen=True)
class Tile:
    """A top image of the unit, with how many of the `answers` ticked it as not showing the concept."""

    image: UnitImage
    ticked_by: int
    answers: int

    @property
    def mostly_unfit(self) -> bool:
        return 2 * self.ticked_by > self.answers


@dataclass(frozen=True)
class Consensus:
    """The unit's row of a comparison summary: what the comparison page of `scope` says about this unit."""

    scope: str
    comparison_url: str
    units: int
    answers_in_scope: int
    row: dict[str, Any]
    aggregation: str
    converged: bool
    min_answers: int

    def _label(self, key: str) -> str:
        code = self.row.get(key)
        return LABELS.get(code, code) if code else "—"

    @property
    def human_category(self) -> str:
        return self._label("human_category")

    @property
    def majority_category(self) -> str:
        return self._label("majority_category")

    @property
    def ds_category(self) -> str:
        return self._label("ds_category")

    @property
    def dissection_category(self) -> str:
        return self._label("auto_human_category")


@dataclass(frozen=True)
class VerificationVerdict:
    """One worker's yes/no on a candidate label of the unit in a blind verification task."""

    assignment: Assignment
    batch: Batch
    candidate_label: str
    source: str
    yes: bool
    counted: bool


@dataclass(frozen=True)
class CamContribution:
    """The unit among the top contributors to one prediction of the run's CAM gallery."""

    image: str
    overlay_url: str
    prediction: str
    probability: float
    contribution: float
    place: int
    """1 = the largest contribution to this prediction."""


@dataclass(frozen=True)
class BatchLink:
    batch: Batch
    kind: str
    task_number: int
    review_url: str


@dataclass
class UnitPage:
    unit: Unit
    images: list[UnitImage]
    concepts: list[dict[str, Any]]
    answers: list[UnitAnswer]
    consensus: list[Consensus]
    verdicts: list[VerificationVerdict]
    cam: list[CamContribution]
    cam_built: bool
    batches: list[BatchLink]

    def tiles(self) -> list[Tile]:
        """The top images with how many listed answers ticked each as not fitting."""
        return [
            Tile(image, sum(image.number in answer.not_fitting for answer in self.answers), len(self.answers))
            for image in self.images
        ]

    def answer_marks(self, answer: UnitAnswer) -> list[ImageMark]:
        return [ImageMark(number, number in answer.not_fitting) for number in range(1, answer.shown + 1)]


def unit_visible(*, user: Any, unit_id: int) -> Unit | None:
    """The unit, if it belongs to a run of the user's projects; else None."""
    return (
        Unit.objects.filter(run__in=DissectionRun.objects.visible_to(user), pk=unit_id)
        .select_related("run__project", "run__network", "run__probe_set")
        .first()
    )


def _why_not_counted(assignment: Assignment, latest: dict[int, int]) -> str:
    """Why the comparison leaves this answer out (empty when it counts); `latest` maps worker -> the pk of
    their latest counted assignment on the unit."""
    if assignment.status == Status.REJECTED:
        return "rejected"
    if not assignment.verified:
        return "not yet confirmed by the provider"
    if latest.get(assignment.worker_id) != assignment.pk:
        return "superseded by the same worker's later answer"
    return ""


def _answers(unit: Unit, batches: list[Batch]) -> list[UnitAnswer]:
    assignments = list(
        Assignment.objects.filter(task__unit=unit, task__kind=Task.Kind.LABEL, task__batch__in=batches)
        .filter(status__in=SHOWN)
        .select_related("worker", "task__batch", "annotation")
        .order_by("submitted_at", "pk")
    )
    latest: dict[int, int] = {}
    for assignment in assignments:
        if assignment.status in comparison.COUNTED and assignment.verified:
            latest[assignment.worker_id] = assignment.pk
    answers = []
    for assignment in assignments:
        annotation: Annotation | None = getattr(assignment, "annotation", None)
        if annotation is None:
            continue
        why = _why_not_counted(assignment, latest)
        answers.append(
            UnitAnswer(
                assignment=assignment,
                batch=assignment.task.batch,
                words=annotation.words,
                category=annotation.category,
                category_display=annotation.get_category_display(),
                not_fitting=frozenset(rank + 1 for rank in annotation.rejected_ranks),
                shown=annotation.shown_count,
                precision=annotation.precision,
                counted=not why,
                why_not_counted=why,
            )
        )
    return answers


def _consensus(
    unit: Unit, label_batches: list[Batch], aggregation: comparison.Aggregation
) -> list[Consensus]:
    """The unit's row of the comparison of each labelling batch that holds it, and of its run when several
    batches do: the same records and the same aggregation as those comparison pages."""
    scopes: list[tuple[str, str, comparison.ComparisonInput]] = [
        (
            f"batch {batch.title}",
            reverse("annotate:batch_comparison", args=[batch.public_id]),
            comparison.batch_comparison_input(batch=batch),
        )
        for batch in label_batches
    ]
    if len(label_batches) > 1:
        scopes.append(
            (
                f"run {unit.run.name} (every batch)",
                reverse("annotate:run_comparison", args=[unit.run.pk]),
                comparison.run_comparison_input(run=unit.run),
            )
        )
    found = []
    for scope, url, data in scopes:
        summary = comparison.comparison_summarize(data=data, aggregation=aggregation, n_resamples=1)
        keys = {comparison.unit_key(unit), comparison.unit_key(unit, with_run=True)}
        row = next((row for row in summary["tables"]["units"] if row["unit_key"] in keys), None)
        if row is None:
            continue
        found.append(
            Consensus(
                scope=scope,
                comparison_url=f"{url}?aggregation={aggregation}",
                units=len(data.records),
                answers_in_scope=sum(len(record.answers) for record in data.records),
                row=row,
                aggregation=aggregation,
                converged=bool(summary["settings"]["dawid_skene_converged"]),
                min_answers=data.min_answers,
            )
        )
    return found


def _verdicts(unit: Unit, batches: list[Batch]) -> list[VerificationVerdict]:
    annotations = (
        Annotation.objects.filter(
            assignment__task__unit=unit,
            assignment__task__kind=Task.Kind.VERIFY,
            assignment__task__batch__in=batches,
            assignment__status__in=SHOWN,
            verify_answer__isnull=False,
        )
        .select_related("assignment__worker", "assignment__task__batch")
        .order_by("assignment__submitted_at", "pk")
    )
    return [
        VerificationVerdict(
            assignment=a.assignment,
            batch=a.assignment.task.batch,
            candidate_label=a.assignment.task.candidate_label,
            source=a.assignment.task.get_candidate_source_display(),
            yes=bool(a.verify_answer),
            counted=a.assignment.status in comparison.COUNTED and a.assignment.verified,
        )
        for a in annotations
    ]


def _cam(unit: Unit) -> tuple[list[CamContribution], bool]:
    """The gallery predictions this unit is a top contributor to, and whether the run has a gallery."""
    entries = run_cam_gallery(run=unit.run)
    found = []
    for entry in entries:
        if entry.get("layer") != unit.layer:
            continue
        for place, contributor in enumerate(entry["units"], start=1):
            if contributor["channel"] == unit.channel:
                found.append(
                    CamContribution(
                        image=entry["image"],
                        overlay_url=entry["overlay_url"],
                        prediction=entry["prediction"],
                        probability=entry["probability"],
                        contribution=contributor["contribution"],
                        place=place,
                    )
                )
    return found, bool(entries)


def _batch_links(unit: Unit, batches: list[Batch]) -> list[BatchLink]:
    tasks = (
        Task.objects.filter(unit=unit, batch__in=batches)
        .select_related("batch")
        .order_by("batch", "position")
    )
    links = []
    for task in tasks:
        before = task.batch.tasks.filter(position__lt=task.position).count()
        review = reverse("annotate:batch_review", args=[task.batch.public_id])
        links.append(
            BatchLink(
                batch=task.batch,
                kind=task.get_kind_display(),
                task_number=before + 1,
                review_url=f"{review}?page={before // selectors.REVIEW_PAGE_SIZE + 1}#task-{task.public_id}",
            )
        )
    return links


def unit_page(*, user: Any, unit: Unit, aggregation: comparison.Aggregation = "dawid_skene") -> UnitPage:
    """Everything the unit page shows about `unit` (one of `unit_visible`'s), from the batches of the user's
    projects."""
    batches = list(
        Batch.objects.visible_to(user).filter(tasks__unit=unit).distinct().order_by("created_at", "pk")
    )
    label_batches = [
        batch for batch in batches if batch.tasks.filter(unit=unit, kind=Task.Kind.LABEL).exists()
    ]
    cam, cam_built = _cam(unit)
    return UnitPage(
        unit=unit,
        images=list(unit.images.order_by("rank")),
        concepts=sorted(unit.top_concepts, key=lambda concept: -(concept.get("iou") or 0.0)),
        answers=_answers(unit, batches),
        consensus=_consensus(unit, label_batches, aggregation),
        verdicts=_verdicts(unit, batches),
        cam=cam,
        cam_built=cam_built,
        batches=_batch_links(unit, batches),
    )
