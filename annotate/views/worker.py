"""Worker pages: the batch link (local and Prolific), task preview, the answer form, returning a task.

A worker is identified by the session (local and Prolific links); MTurk's frame has its own pages in
`annotate.providers.mturk.views`.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
    require_safe,
)

from annotate import selectors, services
from annotate.errors import AnnotateError
from annotate.forms import (
    WorkerStartForm,
    answer_form,
)
from annotate.models import Assignment, Batch, CrowdWorker, Provider, Task
from annotate.providers import get_provider, prolific

SESSION_WORKER = "annotate_worker"
SESSION_PROLIFIC = "annotate_prolific"
_PROLIFIC_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def worker_error(request: HttpRequest, message: str, status: int, batch: Batch | None = None) -> HttpResponse:
    return render(request, "annotate/worker/error.html", {"message": message, "batch": batch}, status=status)


def _session_worker(request: HttpRequest) -> CrowdWorker | None:
    public_id = request.session.get(SESSION_WORKER)
    return CrowdWorker.objects.filter(public_id=public_id).first() if public_id else None


def _login_worker(request: HttpRequest, worker: CrowdWorker) -> None:
    request.session.cycle_key()
    request.session[SESSION_WORKER] = str(worker.public_id)


def task_context(task: Task, **extra: Any) -> dict[str, Any]:
    return {
        "task": task,
        "batch": task.batch,
        "unit": task.unit,
        "images": selectors.task_images(task=task),
        **extra,
    }


@require_http_methods(["GET", "POST"])
def batch_start(request: HttpRequest, batch_id: str) -> HttpResponse:
    """The link a requester shares (local) or gives Prolific as the study URL."""
    batch = get_object_or_404(Batch, public_id=batch_id)
    if batch.provider == Provider.MTURK:
        return worker_error(request, "This batch runs on Amazon Mechanical Turk; open it from there.", 404)
    if batch.state != Batch.State.PUBLISHED:
        return worker_error(
            request, f"This batch is {batch.get_state_display().lower()} and takes no new work.", 409, batch
        )
    if batch.provider == Provider.PROLIFIC:
        ids = {
            key: request.GET.get(key, "")
            for key in (prolific.PARAM_WORKER, prolific.PARAM_STUDY, prolific.PARAM_SESSION)
        }
        bad = [key for key, value in ids.items() if not _PROLIFIC_ID.match(value)]
        if bad:
            return worker_error(
                request, f"Open this study from Prolific: the link is missing {', '.join(bad)}.", 400, batch
            )
        worker = services.crowd_worker_get_or_create(
            provider=Provider.PROLIFIC, external_id=ids[prolific.PARAM_WORKER]
        )
        _login_worker(request, worker)
        request.session[SESSION_PROLIFIC] = {
            "prolific_study_id": ids[prolific.PARAM_STUDY],
            "prolific_session_id": ids[prolific.PARAM_SESSION],
        }
        return redirect("annotate:batch_next", batch_id=batch.public_id)
    form = WorkerStartForm(request.POST or None, initial={"worker_id": request.GET.get("worker", "")})
    if request.method == "POST":
        if not form.is_valid():
            return render(request, "annotate/worker/start.html", {"batch": batch, "form": form}, status=400)
        external_id = form.cleaned_data["worker_id"] or services.random_worker_id()
        worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=external_id)
        _login_worker(request, worker)
        return redirect("annotate:batch_next", batch_id=batch.public_id)
    return render(request, "annotate/worker/start.html", {"batch": batch, "form": form})


@require_safe
def batch_next(request: HttpRequest, batch_id: str) -> HttpResponse:
    """Resume the worker's open assignment, else preview the next task they can take, else finish."""
    batch = get_object_or_404(Batch, public_id=batch_id)
    worker = _session_worker(request)
    if worker is None:
        return redirect("annotate:batch_start", batch_id=batch.public_id)
    if worker.blocked:
        return worker_error(
            request, "Your worker account may no longer take tasks from this requester.", 403, batch
        )
    current = selectors.worker_current_assignment(batch=batch, worker=worker)
    if current is not None:
        return redirect("annotate:assignment", assignment_id=current.public_id)
    if batch.state == Batch.State.PUBLISHED:
        services.assignment_expire_overdue()
        task = selectors.tasks_open_for_worker(batch=batch, worker=worker).first()
        if task is not None:
            return redirect("annotate:task_preview", task_id=task.public_id)
    elif not Assignment.objects.filter(task__batch=batch, worker=worker, status__in=Assignment.DONE).exists():
        return worker_error(
            request, f"This batch is {batch.get_state_display().lower()} and takes no new work.", 409, batch
        )
    completion = get_provider(batch.provider).completion_url(batch)
    if completion:
        return redirect(completion)
    return render(request, "annotate/worker/finished.html", {"batch": batch, "worker": worker})


@require_http_methods(["GET", "POST"])
def task_preview(request: HttpRequest, task_id: str) -> HttpResponse:
    """The task's images with the form disabled; POST accepts the task for the session's worker."""
    task = get_object_or_404(Task.objects.select_related("batch", "unit"), public_id=task_id)
    if task.batch.provider == Provider.MTURK:
        raise Http404("MTurk tasks are opened from MTurk.")
    if request.method == "POST":
        worker = _session_worker(request)
        if worker is None:
            return redirect("annotate:batch_start", batch_id=task.batch.public_id)
        try:
            assignment = services.assignment_accept(
                task=task, worker=worker, **request.session.get(SESSION_PROLIFIC, {})
            )
        except AnnotateError as exc:
            return render(
                request,
                "annotate/worker/task.html",
                task_context(task, preview=True, form=answer_form(task.kind, ranks=[]), error=str(exc)),
                status=exc.status,
            )
        return redirect("annotate:assignment", assignment_id=assignment.public_id)
    return render(
        request,
        "annotate/worker/task.html",
        task_context(task, preview=True, form=answer_form(task.kind, ranks=[])),
    )


@require_http_methods(["GET", "POST"])
def assignment_work(request: HttpRequest, assignment_id: str) -> HttpResponse:
    """The answer form of one of the session worker's own assignments (anyone else's is a 404)."""
    worker = _session_worker(request)
    if worker is None:
        raise Http404("No such assignment.")
    assignment = get_object_or_404(
        Assignment.objects.select_related("task__batch", "task__unit"), public_id=assignment_id, worker=worker
    )
    task = assignment.task
    ranks = selectors.task_image_ranks(task=task)
    if request.method == "GET":
        if assignment.status == Assignment.Status.ACCEPTED and assignment.deadline > timezone.now():
            return render(
                request,
                "annotate/worker/task.html",
                task_context(task, assignment=assignment, form=answer_form(task.kind, ranks=ranks)),
            )
        if assignment.status in (Assignment.Status.ACCEPTED, Assignment.Status.EXPIRED):
            return worker_error(request, "The time for this task ran out.", 410, task.batch)
        return redirect("annotate:batch_next", batch_id=task.batch.public_id)
    form = answer_form(task.kind, request.POST, ranks=ranks)
    context = task_context(task, assignment=assignment, form=form)
    if not form.is_valid():
        return render(request, "annotate/worker/task.html", context, status=400)
    try:
        services.annotation_submit(assignment=assignment, **form.answer_kwargs())
    except AnnotateError as exc:
        return render(request, "annotate/worker/task.html", {**context, "error": str(exc)}, status=exc.status)
    return redirect("annotate:batch_next", batch_id=task.batch.public_id)


@require_POST
def assignment_return(request: HttpRequest, assignment_id: str) -> HttpResponse:
    worker = _session_worker(request)
    assignment = get_object_or_404(
        Assignment.objects.select_related("task__batch"), public_id=assignment_id, worker=worker
    )
    try:
        services.assignment_return(assignment=assignment)
    except AnnotateError as exc:
        return worker_error(request, str(exc), exc.status, assignment.task.batch)
    return redirect("annotate:batch_next", batch_id=assignment.task.batch.public_id)
