"""The REST API of the crowd platform (`/api/`, assembled in `config.api`): batches (create from a run's
units, publish, pause, cancel, progress), their assignments (list, approve, reject, bonus, block), the
qualifications a batch may require and who passed, failed or is pending, the batch export and the comparison
summaries.

Thin, as the pages are: the New batch page's form parses a new batch, `annotate.services` decide and write,
`annotate.selectors` read. Batches are looked up among those the token's requester may see
(`runs.access`), assignments through their batch, so another project's object is a 404.
"""

import io
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.http import http_date
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import LimitOffsetPagination, paginate

from annotate import selectors, services
from annotate.export import batch_export_rows, write_rows
from annotate.forms import BatchCreateForm
from annotate.models import Assignment, Batch, Provider, Qualification, QualificationResult
from annotate.selectors import comparison
from annotate.selectors import qualifications as qualification_selectors
from annotate.services import comparison as comparison_services
from annotate.services.qualifications import batch_qualifications_set
from runs.api import PAGE_MAX, form_data, form_valid, requester, visible_or_404
from runs.models import DissectionRun

REJECTION_CATEGORY = "Prolific batches: Prolific's rejection category (e.g. LOW_EFFORT)"

# --- schemas -----------------------------------------------------------------------------------------------


class ProgressOut(Schema):
    """Verified answers against what the batch asks for (`annotate.selectors.batch_progress`)."""

    required: int
    submitted: int
    approved: int
    rejected: int
    in_progress: int
    unverified: int = Field(description="Answers the provider has not confirmed yet; counted nowhere else")


class BatchOut(Schema):
    id: UUID = Field(alias="public_id")
    title: str
    project: str = Field(alias="project.name")
    project_id: int
    state: str = Field(description="draft, published, paused, finished or cancelled")
    provider: str
    task_count: int
    assignments_per_task: int
    images_per_task: int
    reward: Decimal
    assignment_minutes: int
    lifetime_hours: int
    auto_reject_failed_gold: bool
    block_below_accuracy: float | None
    block_min_gold: int
    created_at: datetime
    published_at: datetime | None
    expires_at: datetime | None
    progress: ProgressOut
    page_url: str = Field(description="The batch's page for requesters")
    worker_url: str | None = Field(description="The link crowd workers open (local link batches only)")
    qualifications: list[UUID] = Field(description="Qualifications a crowd worker passes before any task")

    @staticmethod
    def resolve_task_count(batch: Batch) -> int:
        return batch.tasks.count()

    @staticmethod
    def resolve_qualifications(batch: Batch) -> list[UUID]:
        return list(batch.qualifications.order_by("name").values_list("public_id", flat=True))

    @staticmethod
    def resolve_assignment_minutes(batch: Batch) -> int:
        return int(batch.assignment_duration.total_seconds() // 60)

    @staticmethod
    def resolve_lifetime_hours(batch: Batch) -> int:
        return int(batch.lifetime.total_seconds() // 3600)

    @staticmethod
    def resolve_progress(batch: Batch) -> selectors.Progress:
        return selectors.batch_progress(batch=batch)

    @staticmethod
    def resolve_page_url(batch: Batch, context: dict[str, Any]) -> str:
        return context["request"].build_absolute_uri(reverse("annotate:batch_detail", args=[batch.public_id]))

    @staticmethod
    def resolve_worker_url(batch: Batch, context: dict[str, Any]) -> str | None:
        if batch.provider != Provider.LOCAL:
            return None
        return context["request"].build_absolute_uri(reverse("annotate:batch_start", args=[batch.public_id]))


class GoldIn(Schema):
    unit: int = Field(description="The unit number (channel + 1, as in tally.csv)")
    category: str = Field(
        description="One of the six categories (color, texture, material, part, object, scene)"
    )
    words: list[str] = Field(description="Accepted words")


class BatchCreateIn(Schema):
    """The New batch page's fields: units of one layer of one run, chosen all, interpretable only, a random
    sample, or listed. A field left out takes the page's initial value."""

    title: str
    run: int = Field(description="Run id (GET /api/runs)")
    layer: str
    selection: str | None = Field(None, description="all (the default), interpretable, sample or list")
    sample_size: int | None = Field(None, description="With selection=sample")
    units: list[int] = Field(
        [], description="With selection=list: unit numbers (channel + 1, as in tally.csv and on every page)"
    )
    instructions: str = ""
    provider: str | None = Field(None, description="local (the default), prolific or mturk")
    assignments_per_task: int | None = Field(None, description="Crowd workers per unit")
    images_per_task: int | None = None
    reward: Decimal | None = Field(None, description="Per assignment, USD")
    assignment_minutes: int | None = Field(None, description="Time allowed per assignment")
    lifetime_hours: int | None = None
    prolific_completion_code: str = ""
    gold: list[GoldIn] = Field([], description="Gold units with their known answers")
    auto_reject_failed_gold: bool = False
    block_below_percent: int | None = Field(None, description="Block crowd workers with gold accuracy below")
    block_min_gold: int | None = Field(None, description="…after this many gold answers")
    min_answers: int | None = Field(None, description="Answers a unit needs to enter the comparison")
    qualifications: list[UUID] = Field(
        [], description="Qualifications (GET /api/qualifications) a crowd worker must pass first"
    )


class CrowdWorkerOut(Schema):
    id: UUID = Field(alias="public_id")
    provider: str
    external_id: str
    label: str = Field(description="The name a local worker typed: shown, never trusted")
    blocked: bool
    gold_total: int
    gold_correct: int


class AssignmentOut(Schema):
    id: UUID = Field(alias="public_id")
    batch: UUID = Field(alias="task.batch.public_id")
    task: UUID = Field(alias="task.public_id")
    kind: str = Field(alias="task.kind", description="label or verify")
    unit_id: int = Field(alias="task.unit_id")
    layer: str = Field(alias="task.unit.layer")
    unit: int = Field(alias="task.unit.number", description="The unit number: channel + 1, as in tally.csv")
    channel: int = Field(alias="task.unit.channel")
    gold: bool = Field(alias="task.is_gold")
    worker: CrowdWorkerOut
    status: str = Field(description="accepted, submitted, approved, rejected, returned or expired")
    verified: bool = Field(description="False until the provider confirms the assignment (MTurk)")
    words: str | None
    category: str | None
    verify_answer: bool | None
    precision: float | None
    time_spent_ms: int | None
    gold_passed: bool | None
    bonus: Decimal
    feedback: str
    accepted_at: datetime
    submitted_at: datetime | None
    reviewed_at: datetime | None

    @staticmethod
    def _answer(assignment: Assignment, name: str) -> Any:
        annotation = getattr(assignment, "annotation", None)
        return None if annotation is None else getattr(annotation, name)

    @staticmethod
    def resolve_words(assignment: Assignment) -> Any:
        return AssignmentOut._answer(assignment, "words")

    @staticmethod
    def resolve_category(assignment: Assignment) -> Any:
        return AssignmentOut._answer(assignment, "category")

    @staticmethod
    def resolve_verify_answer(assignment: Assignment) -> Any:
        return AssignmentOut._answer(assignment, "verify_answer")

    @staticmethod
    def resolve_precision(assignment: Assignment) -> Any:
        return AssignmentOut._answer(assignment, "precision")

    @staticmethod
    def resolve_time_spent_ms(assignment: Assignment) -> Any:
        return AssignmentOut._answer(assignment, "time_spent_ms")


class QualificationOut(Schema):
    id: UUID = Field(alias="public_id")
    name: str
    project: str = Field(alias="project.name")
    project_id: int
    min_accuracy: float = Field(description="0..1: the share of items a worker must get right")
    min_items: int = Field(description="Items a worker must answer")
    prolific_group_id: str = Field(description="The Prolific participant group passed participants join")
    item_count: int
    passed: int
    failed: int
    pending: int
    created_at: datetime


class QualificationResultOut(Schema):
    worker: CrowdWorkerOut
    status: str = Field(description="pending, passed or failed")
    items: int = Field(description="Items answered when decided")
    correct: int
    accuracy: float | None
    started_at: datetime
    decided_at: datetime | None


class FeedbackIn(Schema):
    feedback: str = Field("", description="To the crowd worker")


class RejectIn(Schema):
    feedback: str = Field(description="To the crowd worker: why")
    category: str = Field("", description=REJECTION_CATEGORY)


class BonusIn(Schema):
    amount: Decimal = Field(gt=0, max_digits=8, decimal_places=2, description="USD")
    reason: str = Field(description="The crowd worker sees it")


class BlockIn(Schema):
    reason: str = Field(max_length=1000)


class ReviewIn(Schema):
    action: Literal["approve", "reject", "bonus"]
    assignments: list[UUID]
    feedback: str = Field("", description="To the crowd workers (required to reject; a bonus's reason)")
    amount: Decimal | None = Field(None, gt=0, max_digits=8, decimal_places=2, description="Bonus, USD")
    category: str = Field("", description=REJECTION_CATEGORY)


class ReviewOut(Schema):
    done: int
    errors: list[str] = Field(description="One message per assignment that was not changed")
    queued: list[str] = Field(
        description="Sent to the provider, not confirmed yet (Prolific approves in the background): the next "
        "sync records them"
    )


# --- helpers -----------------------------------------------------------------------------------------------


def _batch(request: HttpRequest, batch_id: UUID) -> Batch:
    queryset = Batch.objects.visible_to(requester(request)).select_related("project")
    return visible_or_404(queryset, "batch", public_id=batch_id)


def _assignments(batch_of: QuerySet[Batch]) -> QuerySet[Assignment]:
    return Assignment.objects.filter(task__batch__in=batch_of).select_related(
        "task__batch", "task__unit", "worker", "annotation"
    )


def _assignment(request: HttpRequest, assignment_id: UUID) -> Assignment:
    visible = Batch.objects.visible_to(requester(request))
    return visible_or_404(_assignments(visible), "assignment", public_id=assignment_id)


def _gold_lines(gold: list[GoldIn]) -> str:
    """The gold entries as the New batch page's gold lines ('<unit>; <category>; <word>, <word>')."""
    lines = []
    for number, entry in enumerate(gold, start=1):
        if any(mark in text for text in (entry.category, *entry.words) for mark in ";,\n\r"):
            raise HttpError(
                400, f"Gold units, entry {number}: no ';', ',' or line break in a category or word."
            )
        lines.append(f"{entry.unit}; {entry.category}; {', '.join(entry.words)}")
    return "\n".join(lines)


# --- endpoints ---------------------------------------------------------------------------------------------

router = Router()


@router.get("/batches", response=list[BatchOut], tags=["batches"])
@paginate(LimitOffsetPagination, max_limit=PAGE_MAX)
def batch_list(request: HttpRequest) -> QuerySet[Batch]:
    """Batches of the requester's projects, newest first, with their progress."""
    return Batch.objects.visible_to(requester(request)).select_related("project").order_by("-created_at")


@router.post("/batches", response={201: BatchOut}, tags=["batches"])
def batch_create(request: HttpRequest, payload: BatchCreateIn) -> Status[Batch]:
    """A draft batch from units of a run, as the New batch page makes it (the same checks and messages)."""
    user = requester(request)
    run = visible_or_404(DissectionRun.objects.visible_to(user), "run", pk=payload.run)
    required = [
        visible_or_404(Qualification.objects.visible_to(user), "qualification", public_id=key).pk
        for key in dict.fromkeys(payload.qualifications)
    ]
    given = payload.dict(exclude={"run", "units", "gold", "qualifications"})
    given |= {"run": run.pk, "unit_numbers": ", ".join(map(str, payload.units))}
    given |= {"gold": _gold_lines(payload.gold), "qualifications": required}
    form = BatchCreateForm(form_data(BatchCreateForm, given), user=user)
    form_valid(form)
    with transaction.atomic():
        batch = services.batch_create(**form.batch_kwargs(), created_by=user)
        batch_qualifications_set(batch=batch, qualifications=form.cleaned_data["qualifications"], actor=user)
    return Status(201, _batch(request, batch.public_id))


@router.get("/batches/{batch_id}", response=BatchOut, tags=["batches"])
def batch_detail(request: HttpRequest, batch_id: UUID) -> Batch:
    return _batch(request, batch_id)


@router.get("/batches/{batch_id}/progress", response=ProgressOut, tags=["batches"])
def batch_progress(request: HttpRequest, batch_id: UUID) -> selectors.Progress:
    return selectors.batch_progress(batch=_batch(request, batch_id))


@router.post("/batches/{batch_id}/publish", response=BatchOut, tags=["batches"])
def batch_publish(request: HttpRequest, batch_id: UUID) -> Batch:
    """Open a draft or paused batch to crowd workers (the provider publishes first)."""
    return services.batch_publish(batch=_batch(request, batch_id), actor=requester(request))


@router.post("/batches/{batch_id}/pause", response=BatchOut, tags=["batches"])
def batch_pause(request: HttpRequest, batch_id: UUID) -> Batch:
    """Stop handing out tasks; accepted assignments may still be submitted."""
    return services.batch_pause(batch=_batch(request, batch_id), actor=requester(request))


@router.post("/batches/{batch_id}/cancel", response=BatchOut, tags=["batches"])
def batch_cancel(request: HttpRequest, batch_id: UUID) -> Batch:
    """Close the batch for good; submitted answers stay reviewable."""
    return services.batch_cancel(batch=_batch(request, batch_id), actor=requester(request))


@router.get("/batches/{batch_id}/assignments", response=list[AssignmentOut], tags=["assignments"])
@paginate(LimitOffsetPagination, max_limit=PAGE_MAX)
def assignment_list(request: HttpRequest, batch_id: UUID, status: str = "") -> QuerySet[Assignment]:
    """The batch's assignments in task order, with their answers (`status` picks one status)."""
    batch = _batch(request, batch_id)
    if status and status not in Assignment.Status.values:
        raise HttpError(400, f"Status: {status!r} is not one of {', '.join(Assignment.Status.values)}.")
    assignments = _assignments(Batch.objects.filter(pk=batch.pk)).order_by(
        "task__position", "accepted_at", "pk"
    )
    return assignments.filter(status=status) if status else assignments


@router.post("/batches/{batch_id}/review", response=ReviewOut, tags=["assignments"])
def assignments_review(request: HttpRequest, batch_id: UUID, payload: ReviewIn) -> services.ReviewOutcome:
    """Approve, reject or bonus many assignments of the batch, as the review page does: each is decided on its
    own, and the ones that could not be are listed."""
    batch = _batch(request, batch_id)
    wanted = list(dict.fromkeys(payload.assignments))
    if not wanted:
        raise HttpError(400, "Select at least one assignment.")
    found = {
        a.public_id: a for a in _assignments(Batch.objects.filter(pk=batch.pk)).filter(public_id__in=wanted)
    }
    missing = [str(key) for key in wanted if key not in found]
    if missing:
        raise Http404(f"No such assignment in this batch: {', '.join(missing)}.")
    return services.assignments_review(
        assignments=[found[key] for key in wanted],
        action=payload.action,
        feedback=payload.feedback,
        amount=payload.amount,
        category=payload.category,
        actor=requester(request),
    )


@router.post("/assignments/{assignment_id}/approve", response=AssignmentOut, tags=["assignments"])
def assignment_approve(request: HttpRequest, assignment_id: UUID, payload: FeedbackIn) -> Assignment:
    """Approve a submitted answer here and at the provider (which pays the crowd worker)."""
    assignment = _assignment(request, assignment_id)
    services.assignment_approve(assignment=assignment, feedback=payload.feedback, actor=requester(request))
    return _assignment(request, assignment_id)


@router.post("/assignments/{assignment_id}/reject", response=AssignmentOut, tags=["assignments"])
def assignment_reject(request: HttpRequest, assignment_id: UUID, payload: RejectIn) -> Assignment:
    """Reject a submitted answer (feedback required); its slot goes back to the task."""
    assignment = _assignment(request, assignment_id)
    services.assignment_reject(
        assignment=assignment, feedback=payload.feedback, category=payload.category, actor=requester(request)
    )
    return _assignment(request, assignment_id)


@router.post("/assignments/{assignment_id}/bonus", response=AssignmentOut, tags=["assignments"])
def assignment_bonus(request: HttpRequest, assignment_id: UUID, payload: BonusIn) -> Assignment:
    """Pay a bonus on a submitted or approved assignment (once per assignment)."""
    assignment = _assignment(request, assignment_id)
    services.assignment_send_bonus(
        assignment=assignment, amount=payload.amount, reason=payload.reason, actor=requester(request)
    )
    return _assignment(request, assignment_id)


@router.post("/assignments/{assignment_id}/block", response=CrowdWorkerOut, tags=["assignments"])
def assignment_block(request: HttpRequest, assignment_id: UUID, payload: BlockIn) -> Any:
    """Block the assignment's crowd worker here and at their provider; their unsubmitted assignments are
    returned."""
    assignment = _assignment(request, assignment_id)
    return services.crowd_worker_block(
        worker=assignment.worker, reason=payload.reason, actor=requester(request), batch=assignment.task.batch
    )


@router.get("/qualifications", response=list[QualificationOut], tags=["qualifications"])
@paginate(LimitOffsetPagination, max_limit=PAGE_MAX)
def qualification_list(request: HttpRequest) -> QuerySet[Qualification]:
    """Qualifications of the requester's projects with how many crowd workers passed, failed or wait."""
    return qualification_selectors.qualifications_of(user=requester(request))


@router.get(
    "/qualifications/{qualification_id}/results",
    response=list[QualificationResultOut],
    tags=["qualifications"],
)
@paginate(LimitOffsetPagination, max_limit=PAGE_MAX)
def qualification_results(
    request: HttpRequest, qualification_id: UUID, status: str = ""
) -> QuerySet[QualificationResult]:
    """Who passed, failed or is pending on the qualification, newest first (`status` picks one)."""
    qualification = visible_or_404(
        Qualification.objects.visible_to(requester(request)), "qualification", public_id=qualification_id
    )
    if status and status not in QualificationResult.Status.values:
        raise HttpError(
            400, f"Status: {status!r} is not one of {', '.join(QualificationResult.Status.values)}."
        )
    return qualification_selectors.qualification_results(qualification=qualification, status=status)


@router.get("/batches/{batch_id}/export", tags=["exports"])
def batch_export(
    request: HttpRequest, batch_id: UUID, format: Literal["csv", "json"] = "json"
) -> HttpResponse:
    """The batch export of the review page: one row per answered or decided assignment, as CSV or JSON."""
    batch = _batch(request, batch_id)
    buffer = io.StringIO()
    rows = batch_export_rows(batch=batch)
    write_rows(rows, buffer, format)
    services.batch_export_record(
        batch=batch, what=f"answers as {format}", rows=len(rows), actor=requester(request)
    )
    content_type = "text/csv; charset=utf-8" if format == "csv" else "application/json"
    response = HttpResponse(buffer.getvalue(), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.public_id}.{format}"'
    return response


class ComparisonQuery(Schema):
    aggregation: comparison.Aggregation = Field("dawid_skene", description="dawid_skene or majority")


def _comparison(
    response: HttpResponse, *, aggregation: comparison.Aggregation, **subject: Any
) -> dict[str, Any]:
    """The stored summary, as the comparison page's summary.json: Last-Modified says when it was computed,
    X-Comparison-Stale whether newer answers are being counted (a recomputation is then queued)."""
    stored, stale = comparison_services.comparison_figures(aggregation=aggregation, **subject)
    response["Last-Modified"] = http_date(stored.computed_at.timestamp())
    response["X-Comparison-Stale"] = "true" if stale else "false"
    return stored.summary


@router.get("/batches/{batch_id}/comparison", response=dict[str, Any], tags=["comparison"])
def batch_comparison(
    request: HttpRequest, response: HttpResponse, batch_id: UUID, query: Query[ComparisonQuery]
) -> dict[str, Any]:
    """The human-versus-automatic comparison summary of the batch: the comparison page's summary.json."""
    return _comparison(response, batch=_batch(request, batch_id), aggregation=query.aggregation)


@router.get("/runs/{run_id}/comparison", response=dict[str, Any], tags=["comparison"])
def run_comparison(
    request: HttpRequest, response: HttpResponse, run_id: int, query: Query[ComparisonQuery]
) -> dict[str, Any]:
    """The comparison summary over every answer on the run's units: the run comparison page's summary.json."""
    run = visible_or_404(DissectionRun.objects.visible_to(requester(request)), "run", pk=run_id)
    return _comparison(response, run=run, aggregation=query.aggregation)
