"""Requester pages (staff only): dashboard, batches, review, blocking, export.

Every batch and run is looked up among those the user may see (`runs.access`): another project's is a 404.
"""

from __future__ import annotations

import io
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
from annotate.export import FORMATS, write_rows
from annotate.forms import (
    BatchCreateForm,
    BlockForm,
    ReviewForm,
)
from annotate.models import Batch, CrowdWorker, Provider
from annotate.providers import ProviderError, prolific
from runs.access import staff_required
from runs.models import DissectionRun
from runs.selectors import run_layers, runs_overview


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
    return render(
        request,
        "annotate/dashboard.html",
        {
            "runs": runs_overview(user=request.user),
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
                batch = services.batch_create(**form.batch_kwargs(), created_by=request.user)
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
    return render(
        request,
        "annotate/batch_detail.html",
        {
            "batch": batch,
            "progress": selectors.batch_progress(batch=batch),
            "worker_link": _worker_link(request, batch),
            "tasks": batch.tasks.select_related("unit").order_by("position"),
        },
    )


_BATCH_ACTIONS = {
    "publish": services.batch_publish,
    "pause": services.batch_pause,
    "cancel": services.batch_cancel,
}


@staff_required
@require_POST
def batch_action(request: HttpRequest, batch_id: str, action: str) -> HttpResponse:
    batch = _batch(request, batch_id)
    try:
        if action == "sync":
            result = services.batch_sync(batch=batch)
            messages.success(
                request,
                f"Synced: {result.seen} assignments seen, {result.updated} updated here, "
                f"{result.pushed} decisions sent, {len(result.unknown)} unknown.",
            )
        elif action in _BATCH_ACTIONS:
            _BATCH_ACTIONS[action](batch=batch)
            messages.success(request, f"Batch {batch.get_state_display().lower()}.")
        else:
            raise Http404("Unknown action.")
    except (AnnotateError, ProviderError) as exc:
        messages.error(request, str(exc))
    return redirect("annotate:batch_detail", batch_id=batch.public_id)


@staff_required
@require_http_methods(["GET", "POST"])
def batch_review(request: HttpRequest, batch_id: str) -> HttpResponse:
    """Per unit: images, automatic label, every answer; approve / reject / bonus many at once."""
    batch = _batch(request, batch_id)
    form = ReviewForm(request.POST or None, batch=batch)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                outcome = services.assignments_review(
                    assignments=form.cleaned_data["assignments"],
                    action=form.cleaned_data["action"],
                    feedback=form.cleaned_data["feedback"],
                    amount=form.cleaned_data["bonus_amount"],
                )
            except AnnotateError as exc:
                messages.error(request, str(exc))
            else:
                if outcome.done:
                    messages.success(
                        request, f"{form.cleaned_data['action'].capitalize()}: {outcome.done} assignment(s)."
                    )
                for error in outcome.errors:
                    messages.error(request, error)
                return redirect(request.get_full_path())
        status = 400
    page = Paginator(selectors.batch_review(batch=batch), selectors.REVIEW_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "annotate/review.html",
        {
            "batch": batch,
            "form": form,
            "tasks": page,
            "page": page,
            "workers": selectors.batch_workers(batch=batch),
            "progress": selectors.batch_progress(batch=batch),
            "selected": {str(v) for v in (form["assignments"].value() or [])},
        },
        status=status,
    )


@staff_required
@require_POST
def crowd_worker_block(request: HttpRequest, batch_id: str, worker_id: str) -> HttpResponse:
    """Block a crowd worker everywhere (a provider identity is not a project's), but only from a batch the
    requester sees and that the worker worked on."""
    batch = _batch(request, batch_id)
    worker = get_object_or_404(
        CrowdWorker.objects.filter(assignments__task__batch=batch).distinct(), public_id=worker_id
    )
    form = BlockForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Blocking needs a reason.")
    else:
        try:
            services.crowd_worker_block(worker=worker, reason=form.cleaned_data["reason"])
            messages.success(request, f"Blocked {worker.external_id}.")
        except (AnnotateError, ProviderError) as exc:
            messages.error(request, str(exc))
    return redirect("annotate:batch_review", batch_id=batch.public_id)


@staff_required
@require_safe
def batch_export(request: HttpRequest, batch_id: str, fmt: str) -> HttpResponse:
    batch = _batch(request, batch_id)
    if fmt not in FORMATS:
        raise Http404("Unknown export format.")
    buffer = io.StringIO()
    write_rows(selectors.batch_export_rows(batch=batch), buffer, fmt)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    response = HttpResponse(buffer.getvalue(), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.public_id}.{fmt}"'
    return response
