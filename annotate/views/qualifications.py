"""Qualification pages: the worker's test (the task page on gold units, before a batch that requires it) and
the requester's list, form and results (staff only, scoped to their projects: another project's is a 404).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_safe

from annotate.errors import AnnotateError
from annotate.forms import QualificationCreateForm, answer_form
from annotate.models import Batch, QualificationItem, QualificationResult, Task
from annotate.selectors import qualifications as selectors
from annotate.services import qualifications as services
from annotate.views.images import unit_image_response
from annotate.views.worker import link_context, session_worker, worker_error
from runs.access import staff_required
from runs.models import DissectionRun
from runs.selectors import run_layers


@require_http_methods(["GET", "POST"])
def qualification_test(request: HttpRequest, batch_id: str) -> HttpResponse:
    """The next item of the first qualification the session's worker still has to pass for the batch; the
    answer is stored, and after the last item the test is graded and the worker goes on (or is told)."""
    batch = get_object_or_404(Batch, public_id=batch_id)
    worker = session_worker(request, batch)
    if worker is None:
        return redirect("annotate:batch_start", batch_id=batch.public_id)
    if batch.state != Batch.State.PUBLISHED:
        return worker_error(
            request, f"This batch is {batch.get_state_display().lower()} and takes no new work.", 409, batch
        )
    missing = selectors.qualifications_missing(batch=batch, worker=worker)
    if any(r is not None and r.status == QualificationResult.Status.FAILED for _, r in missing):
        return worker_error(request, selectors.FAILED_MESSAGE, 403, batch)
    item = None
    for qualification, _ in missing:
        item = selectors.qualification_next_item(qualification=qualification, worker=worker)
        if item is not None:
            break
    if item is None:
        return redirect("annotate:batch_next", batch_id=batch.public_id)
    images = selectors.qualification_item_images(item=item)
    ranks = [image.rank for image in images]
    form = answer_form(Task.Kind.LABEL, request.POST or None, ranks=ranks)
    context = {
        "batch": batch,
        "item": item,
        "images": images,
        "form": form,
        "position": item.position + 1,
        "item_count": item.qualification.items.count(),
        **link_context(request, batch, worker),
    }
    if request.method == "POST":
        if not form.is_valid():
            return render(request, "annotate/qualification_test.html", context, status=400)
        answer = form.answer_kwargs()
        try:
            result = services.qualification_answer_submit(
                qualification=item.qualification,
                worker=worker,
                item=item,
                words=answer["words"],
                category=answer["category"],
            )
        except AnnotateError as exc:
            return render(
                request, "annotate/qualification_test.html", {**context, "error": str(exc)}, status=exc.status
            )
        if result.status == QualificationResult.Status.PASSED:
            messages.success(request, "Thank you: you passed the short test and can start on the tasks.")
        return redirect("annotate:qualification_test", batch_id=batch.public_id)
    return render(request, "annotate/qualification_test.html", context)


@require_safe
def qualification_item_image(request: HttpRequest, item_id: str, rank: int) -> FileResponse:
    """Image `rank` of a test item, under the item's unguessable id and the rank only (nothing names the
    unit or its label), as task images are served."""
    item = get_object_or_404(
        QualificationItem.objects.select_related("qualification", "unit"), public_id=item_id
    )
    return unit_image_response(selectors.qualification_item_image(item=item, rank=rank))


@staff_required
@require_safe
def qualification_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "annotate/qualification_list.html",
        {"qualifications": selectors.qualifications_of(user=request.user)},
    )


@staff_required
@require_http_methods(["GET", "POST"])
def qualification_create(request: HttpRequest) -> HttpResponse:
    form = QualificationCreateForm(request.POST or None, user=request.user)
    layers = {run.name: run_layers(run=run) for run in DissectionRun.objects.visible_to(request.user)}
    if request.method == "POST":
        if form.is_valid():
            try:
                qualification = services.qualification_create(
                    **form.qualification_kwargs(), actor=request.user
                )
            except AnnotateError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Qualification {qualification.name} created.")
                return redirect("annotate:qualification_detail", qualification_id=qualification.public_id)
        return render(
            request, "annotate/qualification_form.html", {"form": form, "layers": layers}, status=400
        )
    return render(request, "annotate/qualification_form.html", {"form": form, "layers": layers})


@staff_required
@require_safe
def qualification_detail(request: HttpRequest, qualification_id: str) -> HttpResponse:
    qualification = get_object_or_404(
        selectors.qualifications_of(user=request.user), public_id=qualification_id
    )
    return render(
        request,
        "annotate/qualification_detail.html",
        {
            "qualification": qualification,
            "items": qualification.items.select_related("unit").order_by("position"),
            "results": selectors.qualification_results(qualification=qualification),
            "batches": qualification.batches.order_by("-created_at"),
        },
    )
