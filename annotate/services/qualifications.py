"""Qualifications: screening tests of gold units a crowd worker passes before the batches that require them.

A worker's answers are scored as they arrive; once every item is answered, `qualification_grade` decides
the result (passed: at least `min_items` answers and accuracy at least `min_accuracy`). Results belong to
the crowd worker record, so a decision holds for every batch that requires the same qualification. A
qualification may name a Prolific participant group that the participants who passed join
(`annotate.services.prolific.prolific_qualification_groups_sync`). MTurk workers never see our test pages:
an MTurk batch requires the qualification's MTurk QualificationType, whose test MTurk scores
(`annotate.providers.mturk.screening`), and the batch sync records its scores as results
(`annotate.services.mturk.mturk_qualifications_sync`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from agreement import categories
from agreement.gold import gold_matches
from annotate.errors import AlreadyDone, InvalidAnswer, QualificationRequired, ReviewError
from annotate.models import (
    Batch,
    CrowdWorker,
    Provider,
    Qualification,
    QualificationAnswer,
    QualificationItem,
    QualificationResult,
)
from annotate.providers.mturk.screening import screening_problem
from annotate.services.assignments import answer_words_clean
from annotate.services.batches import GoldAnswer
from runs.audit import audit_event_record
from runs.models import Project, Unit

Status = QualificationResult.Status


def qualification_create(
    *,
    project: Project,
    name: str,
    gold: dict[int, GoldAnswer],
    min_accuracy: float,
    min_items: int,
    images_per_item: int = 20,
    prolific_group_id: str = "",
    actor: Any = None,
) -> Qualification:
    """A qualification of gold units {unit pk: accepted answer} of `project`, recorded in the audit trail."""
    name = " ".join(name.split())
    if not name:
        raise InvalidAnswer("Name: give the qualification a name.")
    if not gold:
        raise InvalidAnswer("Gold units: list at least one gold unit.")
    if not 0.0 <= min_accuracy <= 1.0:
        raise InvalidAnswer(f"Minimum accuracy: {min_accuracy:.0%} is not between 0% and 100%.")
    if not 1 <= min_items <= len(gold):
        raise InvalidAnswer(
            f"Minimum items: {min_items} is not between 1 and the {len(gold)} gold units listed."
        )
    units = {unit.pk: unit for unit in Unit.objects.filter(pk__in=gold).select_related("run")}
    outside = [pk for pk in gold if pk not in units or units[pk].run.project_id != project.pk]
    if outside:
        raise InvalidAnswer(f"Gold units: unit id {outside[0]} is not a unit of project {project.name}.")
    with transaction.atomic():
        if Qualification.objects.filter(project=project, name=name).exists():
            raise InvalidAnswer(f"Name: project {project.name} already has a qualification {name!r}.")
        qualification = Qualification.objects.create(
            project=project,
            name=name,
            min_accuracy=min_accuracy,
            min_items=min_items,
            images_per_item=images_per_item,
            prolific_group_id=prolific_group_id,
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        QualificationItem.objects.bulk_create(
            QualificationItem(
                qualification=qualification,
                unit_id=pk,
                gold_category=answer.category,
                gold_words=list(answer.words),
                position=position,
            )
            for position, (pk, answer) in enumerate(gold.items())
        )
        audit_event_record(
            project=project,
            action="qualification",
            actor=actor,
            subject=f"qualification {name}",
            details={
                "change": "create",
                "units": [f"{units[pk].layer} unit {units[pk].channel + 1}" for pk in gold],
                "min_accuracy": min_accuracy,
                "min_items": min_items,
                "prolific_group_id": prolific_group_id,
            },
        )
    return qualification


def batch_qualifications_set(
    *, batch: Batch, qualifications: Iterable[Qualification], actor: Any = None
) -> Batch:
    """Make `batch` require exactly `qualifications` (of its own project); recorded in the audit trail."""
    wanted = list(qualifications)
    if any(q.project_id != batch.project_id for q in wanted):
        raise ReviewError("A batch can require only qualifications of its own project.")
    if batch.provider == Provider.MTURK:
        problems = [problem for q in wanted if (problem := screening_problem(q))]
        if problems:
            raise ReviewError(problems[0])
    with transaction.atomic():
        before = sorted(batch.qualifications.values_list("name", flat=True))
        after = sorted(q.name for q in wanted)
        if batch.mturk_hit_type_id and before != after:
            raise ReviewError(
                "This batch's HIT type is on MTurk already and MTurk fixes its qualification requirements; "
                "create a new batch to require other qualifications."
            )
        batch.qualifications.set(wanted)
        if before != after:
            audit_event_record(
                project=batch.project,
                action="qualification",
                actor=actor,
                batch_key=batch.public_id,
                subject=f"batch {batch.title}",
                details={"change": "require", "before": before, "after": after},
            )
    return batch


def qualification_answer_submit(
    *,
    qualification: Qualification,
    worker: CrowdWorker,
    item: QualificationItem,
    words: str,
    category: str,
    now: datetime | None = None,
) -> QualificationResult:
    """Store `worker`'s answer to `item` once and score it against the gold answer (words and category, as
    gold tasks are scored); the answer to the last item grades the test."""
    if item.qualification_id != qualification.pk:
        raise InvalidAnswer("This item belongs to another test.")
    if worker.blocked:
        raise QualificationRequired("Your worker account may no longer take tasks from this requester.")
    clean_words = answer_words_clean(words)
    if category not in categories.CODES:
        raise InvalidAnswer(f"Category: {category!r} is not one of {', '.join(categories.CODES)}.")
    try:
        with transaction.atomic():
            result, _ = QualificationResult.objects.get_or_create(qualification=qualification, worker=worker)
            result = QualificationResult.objects.select_for_update().get(pk=result.pk)
            if result.status != Status.PENDING:
                raise AlreadyDone("You have already finished this test.")
            if QualificationAnswer.objects.filter(result=result, item=item).exists():
                raise AlreadyDone("You have already answered this item.")
            QualificationAnswer.objects.create(
                result=result,
                item=item,
                words=clean_words,
                category=category,
                correct=gold_matches(
                    words=clean_words,
                    category=category,
                    gold_category=item.gold_category,
                    gold_words=item.gold_words,
                ),
            )
    except IntegrityError:
        raise AlreadyDone("You have already answered this item.") from None
    if (
        not QualificationItem.objects.filter(qualification=qualification)
        .exclude(pk__in=QualificationAnswer.objects.filter(result=result).values("item_id"))
        .exists()
    ):
        return qualification_grade(result=result, now=now)
    return result


def qualification_grade(*, result: QualificationResult, now: datetime | None = None) -> QualificationResult:
    """Decide a pending result from its answers (atomic; a decided result stays as it is)."""
    with transaction.atomic():
        locked = (
            QualificationResult.objects.select_for_update(of=("self",))
            .select_related("qualification__project", "worker")
            .get(pk=result.pk)
        )
        if locked.status != Status.PENDING:
            return locked
        qualification = locked.qualification
        answers = list(QualificationAnswer.objects.filter(result=locked).values_list("correct", flat=True))
        locked.items = len(answers)
        locked.correct = sum(answers)
        locked.accuracy = locked.correct / locked.items if locked.items else None
        passed = (
            locked.items >= qualification.min_items
            and locked.accuracy is not None
            and locked.accuracy >= qualification.min_accuracy
        )
        locked.status = Status.PASSED if passed else Status.FAILED
        locked.decided_at = now or timezone.now()
        locked.save(update_fields=["items", "correct", "accuracy", "status", "decided_at"])
        audit_event_record(
            project=qualification.project,
            action="qualification",
            subject=f"crowd worker {locked.worker} on qualification {qualification.name}",
            details={
                "change": "grade",
                "status": locked.status,
                "items": locked.items,
                "correct": locked.correct,
            },
        )
    return locked
