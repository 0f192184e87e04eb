"""Pages: thin wrappers that parse a request, call one service or selector, and render.

Worker pages identify the worker by the session (local and Prolific links) or, inside MTurk's frame where
our cookies are third-party, by a signed assignment token. Requester pages are staff-only.
"""
from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import user_passes_test
from django.core import signing
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from annotate import selectors, services
from annotate.errors import AnnotateError
from annotate.export import FORMATS, write_rows
from annotate.forms import BatchCreateForm, BlockForm, ReviewForm, WorkerStartForm, answer_form
from annotate.models import Assignment, Batch, DissectionRun, Provider, Task, Worker
from annotate.providers import ProviderError, get_provider
from annotate.providers import mturk as mturk_provider
from annotate.providers import prolific

SESSION_WORKER = "annotate_worker"
SESSION_PROLIFIC = "annotate_prolific"
MTURK_TOKEN_SALT = "annotate.mturk.assignment"
REVIEW_PAGE_SIZE = 25
_PROLIFIC_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")

staff_required = user_passes_test(lambda u: u.is_active and u.is_staff, login_url="login")


# --- worker pages ------------------------------------------------------------------------------------------

def _worker_error(request: HttpRequest, message: str, status: int, batch: Batch | None = None) -> HttpResponse:
    return render(request, "annotate/worker/error.html", {"message": message, "batch": batch}, status=status)


def _session_worker(request: HttpRequest) -> Worker | None:
    public_id = request.session.get(SESSION_WORKER)
    return Worker.objects.filter(public_id=public_id).first() if public_id else None


def _login_worker(request: HttpRequest, worker: Worker) -> None:
    request.session.cycle_key()
    request.session[SESSION_WORKER] = str(worker.public_id)


def _task_context(task: Task, **extra: Any) -> dict[str, Any]:
    return {"task": task, "batch": task.batch, "unit": task.unit, "images": selectors.task_images(task=task),
            **extra}


@require_http_methods(["GET", "POST"])
def batch_start(request: HttpRequest, batch_id: str) -> HttpResponse:
    """The link a requester shares (local) or gives Prolific as the study URL."""
    batch = get_object_or_404(Batch, public_id=batch_id)
    if batch.provider == Provider.MTURK:
        return _worker_error(request, "This batch runs on Amazon Mechanical Turk; open it from there.", 404)
    if batch.state != Batch.State.PUBLISHED:
        return _worker_error(request, f"This batch is {batch.get_state_display().lower()} and takes no "
                                      "new work.", 409, batch)
    if batch.provider == Provider.PROLIFIC:
        ids = {key: request.GET.get(key, "") for key in
               (prolific.PARAM_WORKER, prolific.PARAM_STUDY, prolific.PARAM_SESSION)}
        bad = [key for key, value in ids.items() if not _PROLIFIC_ID.match(value)]
        if bad:
            return _worker_error(request, f"Open this study from Prolific: the link is missing "
                                          f"{', '.join(bad)}.", 400, batch)
        worker = services.worker_get_or_create(provider=Provider.PROLIFIC, external_id=ids[prolific.PARAM_WORKER])
        _login_worker(request, worker)
        request.session[SESSION_PROLIFIC] = {"prolific_study_id": ids[prolific.PARAM_STUDY],
                                             "prolific_session_id": ids[prolific.PARAM_SESSION]}
        return redirect("annotate:batch_next", batch_id=batch.public_id)
    form = WorkerStartForm(request.POST or None, initial={"worker_id": request.GET.get("worker", "")})
    if request.method == "POST":
        if not form.is_valid():
            return render(request, "annotate/worker/start.html", {"batch": batch, "form": form}, status=400)
        external_id = form.cleaned_data["worker_id"] or services.random_worker_id()
        worker = services.worker_get_or_create(provider=Provider.LOCAL, external_id=external_id)
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
        return _worker_error(request, "Your worker account may no longer take tasks from this requester.", 403,
                             batch)
    current = selectors.worker_current_assignment(batch=batch, worker=worker)
    if current is not None:
        return redirect("annotate:assignment", assignment_id=current.public_id)
    if batch.state == Batch.State.PUBLISHED:
        services.assignment_expire_overdue()
        task = selectors.tasks_open_for_worker(batch=batch, worker=worker).first()
        if task is not None:
            return redirect("annotate:task_preview", task_id=task.public_id)
    elif not Assignment.objects.filter(task__batch=batch, worker=worker, status__in=Assignment.DONE).exists():
        return _worker_error(request, f"This batch is {batch.get_state_display().lower()} and takes no "
                                      "new work.", 409, batch)
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
            assignment = services.assignment_accept(task=task, worker=worker,
                                                    **request.session.get(SESSION_PROLIFIC, {}))
        except AnnotateError as exc:
            return render(request, "annotate/worker/task.html",
                          _task_context(task, preview=True, form=answer_form(task.kind, ranks=[]), error=str(exc)),
                          status=exc.status)
        return redirect("annotate:assignment", assignment_id=assignment.public_id)
    return render(request, "annotate/worker/task.html",
                  _task_context(task, preview=True, form=answer_form(task.kind, ranks=[])))


@require_http_methods(["GET", "POST"])
def assignment_work(request: HttpRequest, assignment_id: str) -> HttpResponse:
    """The answer form of one of the session worker's own assignments (anyone else's is a 404)."""
    worker = _session_worker(request)
    if worker is None:
        raise Http404("No such assignment.")
    assignment = get_object_or_404(Assignment.objects.select_related("task__batch", "task__unit"),
                                   public_id=assignment_id, worker=worker)
    task = assignment.task
    ranks = selectors.task_image_ranks(task=task)
    if request.method == "GET":
        if assignment.status == Assignment.Status.ACCEPTED and assignment.deadline > timezone.now():
            return render(request, "annotate/worker/task.html",
                          _task_context(task, assignment=assignment, form=answer_form(task.kind, ranks=ranks)))
        if assignment.status in (Assignment.Status.ACCEPTED, Assignment.Status.EXPIRED):
            return _worker_error(request, "The time for this task ran out.", 410, task.batch)
        return redirect("annotate:batch_next", batch_id=task.batch.public_id)
    form = answer_form(task.kind, request.POST, ranks=ranks)
    context = _task_context(task, assignment=assignment, form=form)
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
    assignment = get_object_or_404(Assignment.objects.select_related("task__batch"), public_id=assignment_id,
                                   worker=worker)
    try:
        services.assignment_return(assignment=assignment)
    except AnnotateError as exc:
        return _worker_error(request, str(exc), exc.status, assignment.task.batch)
    return redirect("annotate:batch_next", batch_id=assignment.task.batch.public_id)


# --- MTurk's frame -----------------------------------------------------------------------------------------

def _framable_by_mturk(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = "frame-ancestors " + " ".join(mturk_provider.WORKER_SITES)
    return response


def _submit_host(turk_submit_to: str) -> str | None:
    host = turk_submit_to.rstrip("/")
    return host if host in mturk_provider.SUBMIT_HOSTS else None


@xframe_options_exempt
@require_http_methods(["GET"])
def mturk_task(request: HttpRequest, task_id: str) -> HttpResponse:
    """The ExternalQuestion page: a preview, or the form for MTurk's assignmentId/workerId."""
    task = get_object_or_404(Task.objects.select_related("batch", "unit"), public_id=task_id,
                             batch__provider=Provider.MTURK)
    assignment_id = request.GET.get("assignmentId", "")
    if not assignment_id or assignment_id == mturk_provider.PREVIEW_ASSIGNMENT_ID:
        return _framable_by_mturk(render(request, "annotate/worker/task.html", _task_context(
            task, preview=True, mturk=True, form=answer_form(task.kind, ranks=[]))))
    worker_id, hit_id = request.GET.get("workerId", ""), request.GET.get("hitId", "")
    submit_to = _submit_host(request.GET.get("turkSubmitTo", ""))
    if not worker_id or submit_to is None:
        return _framable_by_mturk(_worker_error(
            request, "Open this task from MTurk: the link lacks workerId or a valid turkSubmitTo.", 400))
    try:
        worker = services.worker_get_or_create(provider=Provider.MTURK, external_id=worker_id)
        assignment = services.assignment_accept(task=task, worker=worker, mturk_assignment_id=assignment_id,
                                                mturk_hit_id=hit_id, turk_submit_to=submit_to)
    except AnnotateError as exc:
        return _framable_by_mturk(_worker_error(request, str(exc), exc.status, task.batch))
    if assignment.status != Assignment.Status.ACCEPTED:
        return _framable_by_mturk(_worker_error(request, "You have already done this task.", 409, task.batch))
    ranks = selectors.task_image_ranks(task=task)
    return _framable_by_mturk(render(request, "annotate/worker/task.html", _task_context(
        task, assignment=assignment, mturk=True, form=answer_form(task.kind, ranks=ranks),
        token=signing.dumps(str(assignment.public_id), salt=MTURK_TOKEN_SALT))))


@csrf_exempt  # our cookies are third-party inside MTurk's frame; the signed token below stands in for CSRF
@xframe_options_exempt
@require_POST
def mturk_submit(request: HttpRequest, task_id: str) -> HttpResponse:
    """Store the answer, then hand the worker back to MTurk's externalSubmit with their assignmentId."""
    try:
        public_id = signing.loads(request.POST.get("token", ""), salt=MTURK_TOKEN_SALT)
    except signing.BadSignature:
        return _framable_by_mturk(_worker_error(request, "This form is not valid; reload the task.", 403))
    assignment = get_object_or_404(Assignment.objects.select_related("task__batch", "task__unit"),
                                   public_id=public_id, task__public_id=task_id)
    task = assignment.task
    ranks = selectors.task_image_ranks(task=task)
    form = answer_form(task.kind, request.POST, ranks=ranks)
    context = _task_context(task, assignment=assignment, mturk=True, form=form, token=request.POST["token"])
    if not form.is_valid():
        return _framable_by_mturk(render(request, "annotate/worker/task.html", context, status=400))
    try:
        services.annotation_submit(assignment=assignment, **form.answer_kwargs())
    except AnnotateError as exc:
        return _framable_by_mturk(render(request, "annotate/worker/task.html", {**context, "error": str(exc)},
                                         status=exc.status))
    return _framable_by_mturk(render(request, "annotate/worker/mturk_done.html", {
        "action": f"{assignment.turk_submit_to}/mturk/externalSubmit",
        "assignment_id": assignment.mturk_assignment_id}))


# --- requester pages ---------------------------------------------------------------------------------------

def _worker_link(request: HttpRequest, batch: Batch) -> str:
    link = request.build_absolute_uri(reverse("annotate:batch_start", args=[batch.public_id]))
    if batch.provider == Provider.PROLIFIC:
        params = {key: "{{%" + key + "%}}" for key in
                  (prolific.PARAM_WORKER, prolific.PARAM_STUDY, prolific.PARAM_SESSION)}
        link += "?" + urlencode(params, safe="{}%")
    return link


@staff_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "annotate/dashboard.html", {"runs": selectors.runs_overview(),
                                                       "batches": selectors.batches_overview()})


@staff_required
@require_http_methods(["GET", "POST"])
def batch_create(request: HttpRequest) -> HttpResponse:
    form = BatchCreateForm(request.POST or None, initial={"run": request.GET.get("run"),
                                                          "layer": request.GET.get("layer", "")})
    layers = {run.name: selectors.run_layers(run=run) for run in DissectionRun.objects.all()}
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
    batch = get_object_or_404(Batch, public_id=batch_id)
    return render(request, "annotate/batch_detail.html", {
        "batch": batch, "progress": selectors.batch_progress(batch=batch), "worker_link": _worker_link(request, batch),
        "tasks": batch.tasks.select_related("unit").order_by("position")})


_BATCH_ACTIONS = {"publish": services.batch_publish, "pause": services.batch_pause,
                  "cancel": services.batch_cancel}


@staff_required
@require_POST
def batch_action(request: HttpRequest, batch_id: str, action: str) -> HttpResponse:
    batch = get_object_or_404(Batch, public_id=batch_id)
    try:
        if action == "sync":
            result = services.batch_sync(batch=batch)
            messages.success(request, f"Synced: {result.seen} assignments seen, {result.updated} updated here, "
                                      f"{result.pushed} decisions sent, {len(result.unknown)} unknown.")
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
    batch = get_object_or_404(Batch, public_id=batch_id)
    form = ReviewForm(request.POST or None, batch=batch)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                outcome = services.assignments_review(
                    assignments=form.cleaned_data["assignments"], action=form.cleaned_data["action"],
                    feedback=form.cleaned_data["feedback"], amount=form.cleaned_data["bonus_amount"])
            except AnnotateError as exc:
                messages.error(request, str(exc))
            else:
                if outcome.done:
                    messages.success(request, f"{form.cleaned_data['action'].capitalize()}: {outcome.done} "
                                              "assignment(s).")
                for error in outcome.errors:
                    messages.error(request, error)
                return redirect(request.get_full_path())
        status = 400
    page = Paginator(selectors.batch_review(batch=batch), REVIEW_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "annotate/review.html", {
        "batch": batch, "form": form, "tasks": page, "page": page,
        "workers": selectors.batch_workers(batch=batch), "progress": selectors.batch_progress(batch=batch),
        "selected": {str(v) for v in (form["assignments"].value() or [])}}, status=status)


@staff_required
@require_POST
def worker_block(request: HttpRequest, batch_id: str, worker_id: str) -> HttpResponse:
    batch = get_object_or_404(Batch, public_id=batch_id)
    worker = get_object_or_404(Worker, public_id=worker_id)
    form = BlockForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Blocking needs a reason.")
    else:
        try:
            services.worker_block(worker=worker, reason=form.cleaned_data["reason"])
            messages.success(request, f"Blocked {worker.external_id}.")
        except (AnnotateError, ProviderError) as exc:
            messages.error(request, str(exc))
    return redirect("annotate:batch_review", batch_id=batch.public_id)


@staff_required
@require_safe
def batch_export(request: HttpRequest, batch_id: str, fmt: str) -> HttpResponse:
    batch = get_object_or_404(Batch, public_id=batch_id)
    if fmt not in FORMATS:
        raise Http404("Unknown export format.")
    buffer = io.StringIO()
    write_rows(selectors.batch_export_rows(batch=batch), buffer, fmt)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    response = HttpResponse(buffer.getvalue(), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.public_id}.{fmt}"'
    return response

