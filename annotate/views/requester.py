"""Requester pages (staff only): dashboard, batches, review, crowd workers (block, unblock), export.

Every batch and run is looked up among those the user may see (`runs.access`): another project's is a 404.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
    require_safe,
)

from annotate import selectors, services
from annotate.errors import AnnotateError
from annotate.export import FORMATS, batch_export_rows, write_rows
from annotate.forms import (
    BatchCreateForm,
    BlockForm,
    ReviewFilterForm,
    ReviewForm,
    twoafc_batch_kwargs,
)
from annotate.models import Assignment, Batch, Provider
from annotate.providers import ProviderError, prolific
from annotate.selectors.qualifications import batch_qualification_standings
from annotate.services.qualifications import batch_qualifications_set
from annotate.services.twoafc import twoafc_batch_create
from runs.access import staff_required
from runs.audit import audit_events
from runs.models import DissectionRun
from runs.selectors import jobs_overview, run_layers, runs_overview

AUDIT_SHOWN = 50
"""The newest decisions the batch page lists; the CSV has them all."""
CONFIRM_FIELD = "confirm"
"""The POST field (value 'yes') that a confirmation page adds; a destructive action without it only shows
that page."""


def _batch(request: HttpRequest, batch_id: str) -> Batch:
    """The batch, if the user's projects hold it; else 404."""
    return get_object_or_404(
        Batch.objects.visible_to(request.user).select_related("project"), public_id=batch_id
    )


def _worker_link(request: HttpRequest, batch: Batch) -> str:
    link = request.build_absolute_uri(reverse("annotate:batch_start", args=[batch.public_id]))
    if batch.provider == Provider.PROLIFIC:
        params = {
            key: "{{%" + key + "%}}"
            for key in (prolific.PARAM_WORKER, prolific.PARAM_STUDY, prolific.PARAM_SESSION)
        }
        link += "?" + urlencode(params, safe="{}%")
    return link


@staff_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    jobs = jobs_overview(user=request.user)
    return render(
        request,
        "annotate/dashboard.html",
        {
            "runs": runs_overview(user=request.user),
            "jobs": jobs,
            "jobs_running": any(view.job.status in ("queued", "running") for view in jobs),
            "batches": selectors.batches_overview(user=request.user),
        },
    )


@staff_required
@require_http_methods(["GET", "POST"])
def batch_create(request: HttpRequest) -> HttpResponse:
    form = BatchCreateForm(
        request.POST or None,
        initial={"run": request.GET.get("run"), "layer": request.GET.get("layer", "")},
        user=request.user,
    )
    layers = {run.name: run_layers(run=run) for run in DissectionRun.objects.visible_to(request.user)}
    if request.method == "POST":
        if form.is_valid():
            try:
                if form.cleaned_data.get("task_type") == Batch.TaskType.TWOAFC:
                    batch = twoafc_batch_create(**twoafc_batch_kwargs(form), created_by=request.user)
                else:
                    batch = services.batch_create(**form.batch_kwargs(), created_by=request.user)
                # The form checked the project and provider, so this cannot refuse what batch_create made.
                batch_qualifications_set(
                    batch=batch, qualifications=form.cleaned_data["qualifications"], actor=request.user
                )
            except AnnotateError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Draft batch created with {batch.tasks.count()} tasks.")
                return redirect("annotate:batch_detail", batch_id=batch.public_id)
        return render(request, "annotate/batch_form.html", {"form": form, "layers": layers}, status=400)
    return render(request, "annotate/batch_form.html", {"form": form, "layers": layers})


@staff_required
@require_safe
def batch_detail(request: HttpRequest, batch_id: str) -> HttpResponse:
    batch = _batch(request, batch_id)
    tasks = list(batch.tasks.select_related("unit").order_by("position"))
    return render(
        request,
        "annotate/batch_detail.html",
        {
            "batch": batch,
            "progress": selectors.batch_progress(batch=batch),
            "worker_link": _worker_link(request, batch),
            "tasks": tasks,
            "unit_count": len({task.unit_id for task in tasks}),
            "verification": selectors.batch_verification(batch=batch),
            "qualification_standings": batch_qualification_standings(batch=batch),
            "audit_events": audit_events(user=request.user, batch_key=batch.public_id)[:AUDIT_SHOWN],
        },
    )


_BATCH_ACTIONS = {
    "publish": services.batch_publish,
    "pause": services.batch_pause,
    "cancel": services.batch_cancel,
}


def _confirm(
    request: HttpRequest,
    *,
    title: str,
    effects: list[str],
    action_url: str,
    hidden: list[tuple[str, str]],
    button: str,
    back_url: str,
) -> HttpResponse:
    """The confirmation step of a destructive action: says what will happen and posts the same request
    again with `confirm=yes`, the only request that acts."""
    return render(
        request,
        "annotate/confirm.html",
        {
            "title": title,
            "effects": effects,
            "action_url": action_url,
            "hidden": hidden,
            "button": button,
            "back_url": back_url,
        },
    )


def _confirmed(request: HttpRequest) -> bool:
    return request.POST.get(CONFIRM_FIELD) == "yes"


def _cancel_effects(batch: Batch) -> list[str]:
    progress = selectors.batch_progress(batch=batch)
    effects = [
        f"“{batch.title}” is cancelled for good: it can never be published or resumed again "
        "(Pause stops it for a while instead).",
        f"Workers can take no new task; the {progress.in_progress} task(s) in progress now are returned "
        "unanswered.",
        f"The {progress.submitted + progress.rejected} answer(s) already given stay: you can still review, "
        "approve, pay and export them.",
    ]
    if batch.provider == Provider.MTURK and batch.state != Batch.State.DRAFT:
        effects.append("Its HITs on Mechanical Turk expire now.")
    return effects


@staff_required
@require_POST
def batch_action(request: HttpRequest, batch_id: str, action: str) -> HttpResponse:
    """Publish, pause, sync (one click) or cancel (final, so only after its confirmation page)."""
    batch = _batch(request, batch_id)
    if action == "cancel" and not _confirmed(request):
        return _confirm(
            request,
            title=f"Cancel the batch “{batch.title}”?",
            effects=_cancel_effects(batch),
            action_url=reverse("annotate:batch_action", args=[batch.public_id, "cancel"]),
            hidden=[],
            button="Cancel the batch for good",
            back_url=reverse("annotate:batch_detail", args=[batch.public_id]),
        )
    try:
        if action == "sync":
            result = services.batch_sync(batch=batch)
            messages.success(
                request,
                f"Synced: {result.seen} assignments seen, {result.updated} updated here, "
                f"{result.pushed} decisions sent, {len(result.unknown)} unknown.",
            )
        elif action in _BATCH_ACTIONS:
            _BATCH_ACTIONS[action](batch=batch, actor=request.user)
            messages.success(request, f"Batch {batch.get_state_display().lower()}.")
        else:
            raise Http404("Unknown action.")
    except (AnnotateError, ProviderError) as exc:
        messages.error(request, str(exc))
    return redirect("annotate:batch_detail", batch_id=batch.public_id)


@staff_required
@require_http_methods(["GET", "POST"])
def batch_review(request: HttpRequest, batch_id: str) -> HttpResponse:
    """Per unit: numbered images, automatic label, the answers the filters keep; approve / reject / bonus the
    ticked answers, or approve the rest. A reject acts only after its confirmation step."""
    batch = _batch(request, batch_id)
    form = ReviewForm(request.POST or None, batch=batch)
    filter_form = ReviewFilterForm(request.GET, batch=batch)
    filters = filter_form.filters()
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            if data["action"] == "reject" and not data["confirm"]:
                return _confirm(
                    request,
                    title=f"Reject {len(data['assignments'])} answer(s)?",
                    effects=_reject_effects(data["assignments"], data["feedback"]),
                    action_url=request.get_full_path(),
                    hidden=[
                        (name, value)
                        for name in request.POST
                        if name not in ("csrfmiddlewaretoken", CONFIRM_FIELD)
                        for value in request.POST.getlist(name)
                    ],
                    button="Reject these answers",
                    back_url=request.get_full_path(),
                )
            _review(request, batch, data)
            return redirect(request.get_full_path())
        status = 400
    page = Paginator(
        selectors.batch_review(batch=batch, filters=filters), selectors.REVIEW_PAGE_SIZE
    ).get_page(request.GET.get("page"))
    return render(
        request,
        "annotate/review.html",
        {
            "batch": batch,
            "form": form,
            "filter_form": filter_form,
            "filters": filters,
            "query": filters.query(),
            "page": page,
            "review_tasks": selectors.review_tasks(page.object_list, images_per_task=batch.images_per_task),
            "workers": selectors.batch_workers(batch=batch),
            "progress": selectors.batch_progress(batch=batch),
            "pending": selectors.batch_pending(batch=batch).count(),
            "selected": {str(v) for v in (form["assignments"].value() or [])},
        },
        status=status,
    )


def _reject_effects(assignments: list[Assignment], feedback: str) -> list[str]:
    answers = "; ".join(
        f"{selectors.crowd_worker_name(a.worker)} on {a.task.unit.layer} unit {a.task.unit.channel + 1}"
        for a in assignments
    )
    return [
        f"These answers are rejected: {answers}.",
        f"Each of these workers is told why: “{feedback.strip()}”.",
        "A rejected answer is not paid (on Mechanical Turk it also counts against the worker's approval "
        "rate) and counts in no statistic; its place opens again for another worker.",
        "A rejection cannot be undone here.",
    ]


def _review(request: HttpRequest, batch: Batch, data: dict[str, Any]) -> None:
    """Carry out a valid review form and say what happened."""
    action = data["action"]
    if action == "approve_rest":
        try:
            approved = services.batch_approve_rest(
                batch=batch, keep=data["assignments"], feedback=data["feedback"], actor=request.user
            )
        except (AnnotateError, ProviderError) as exc:
            messages.error(request, f"Nothing was approved: {exc}")
        else:
            kept = len(data["assignments"])
            messages.success(
                request,
                f"Approved the rest: {approved} pending answer(s)"
                + (f"; the {kept} ticked answer(s) were left as they were." if kept else "."),
            )
        return
    try:
        outcome = services.assignments_review(
            assignments=data["assignments"],
            action=action,
            feedback=data["feedback"],
            amount=data["bonus_amount"],
            actor=request.user,
        )
    except AnnotateError as exc:
        messages.error(request, str(exc))
        return
    if outcome.done:
        messages.success(request, f"{action.capitalize()}: {outcome.done} assignment(s).")
    for queued in outcome.queued:
        messages.warning(request, f"Sent, not confirmed yet (the next sync records it): {queued}")
    for error in outcome.errors:
        messages.error(request, error)
    for queued in outcome.queued:
        messages.warning(request, queued)


def _crowd_worker(request: HttpRequest, worker_id: str) -> selectors.CrowdWorkerOverview:
    """The crowd worker as the user sees them (their work in the user's batches); 404 when they took no task
    of any batch the user may see."""
    overview = selectors.crowd_worker_overview(user=request.user, worker_id=worker_id)
    if overview is None:
        raise Http404("No such crowd worker in your batches.")
    return overview


@staff_required
@require_safe
def crowd_worker_detail(request: HttpRequest, worker_id: str) -> HttpResponse:
    """One crowd worker across the requester's batches: gold accuracy, time, decisions, block / unblock."""
    overview = _crowd_worker(request, worker_id)
    return render(
        request,
        "annotate/crowd_worker.html",
        {"overview": overview, "worker": overview.worker, "block_form": BlockForm()},
    )


@staff_required
@require_POST
def crowd_worker_block(request: HttpRequest, worker_id: str) -> HttpResponse:
    """Block a crowd worker everywhere (a provider identity is not a project's), but only one who worked on a
    batch the requester sees, and only after the confirmation step."""
    overview = _crowd_worker(request, worker_id)
    worker = overview.worker
    form = BlockForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Blocking needs a reason.")
        return redirect("annotate:crowd_worker", worker_id=worker.public_id)
    reason = form.cleaned_data["reason"]
    if not _confirmed(request):
        effects = [
            f"{selectors.crowd_worker_name(worker)} is blocked everywhere: in every batch of every project "
            "on this site, not only in yours.",
            "Their tasks in progress are returned unanswered; the answers they already gave stay.",
            f"They are told nothing but can take no more tasks. The reason is kept: “{reason}”.",
            "You can unblock them later from their page.",
        ]
        if worker.provider == Provider.MTURK:
            effects.append("Mechanical Turk blocks them from all of your HITs, with this reason.")
        return _confirm(
            request,
            title=f"Block {selectors.crowd_worker_name(worker)}?",
            effects=effects,
            action_url=reverse("annotate:crowd_worker_block", args=[worker.public_id]),
            hidden=[("reason", reason)],
            button="Block this crowd worker",
            back_url=reverse("annotate:crowd_worker", args=[worker.public_id]),
        )
    try:
        services.crowd_worker_block(
            worker=worker, reason=reason, actor=request.user, batch=overview.batches[0]
        )
        messages.success(request, f"Blocked {worker.external_id}.")
    except (AnnotateError, ProviderError) as exc:
        messages.error(request, str(exc))
    return redirect("annotate:crowd_worker", worker_id=worker.public_id)


@staff_required
@require_POST
def crowd_worker_unblock(request: HttpRequest, worker_id: str) -> HttpResponse:
    worker = _crowd_worker(request, worker_id).worker
    try:
        services.crowd_worker_unblock(worker=worker, actor=request.user)
        messages.success(request, f"Unblocked {worker.external_id}: they may take tasks again.")
    except (AnnotateError, ProviderError) as exc:
        messages.error(request, str(exc))
    return redirect("annotate:crowd_worker", worker_id=worker.public_id)


@staff_required
@require_safe
def batch_export(request: HttpRequest, batch_id: str, fmt: str) -> HttpResponse:
    batch = _batch(request, batch_id)
    if fmt not in FORMATS:
        raise Http404("Unknown export format.")
    buffer = io.StringIO()
    rows = batch_export_rows(batch=batch)
    write_rows(rows, buffer, fmt)
    services.batch_export_record(batch=batch, what=f"answers as {fmt}", rows=len(rows), actor=request.user)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    response = HttpResponse(buffer.getvalue(), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.public_id}.{fmt}"'
    return response
