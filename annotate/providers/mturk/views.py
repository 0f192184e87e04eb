"""MTurk's ExternalQuestion frame: the task page MTurk shows a worker, and the submit that hands them back.

Our cookies are third-party inside MTurk's frame, so the assignment travels as a signed token instead.
"""

from __future__ import annotations

from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
)

from annotate import selectors, services
from annotate.errors import AnnotateError
from annotate.forms import (
    answer_form,
)
from annotate.models import Assignment, Provider, Task
from annotate.providers.mturk import client as mturk_client
from annotate.views.worker import task_context, worker_error

MTURK_TOKEN_SALT = "annotate.mturk.assignment"


def _framable_by_mturk(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = "frame-ancestors " + " ".join(mturk_client.WORKER_SITES)
    return response


def _submit_host(turk_submit_to: str) -> str | None:
    host = turk_submit_to.rstrip("/")
    return host if host in mturk_client.SUBMIT_HOSTS else None


@xframe_options_exempt
@require_http_methods(["GET"])
def mturk_task(request: HttpRequest, task_id: str) -> HttpResponse:
    """The ExternalQuestion page: a preview, or the form for MTurk's assignmentId/workerId."""
    task = get_object_or_404(
        Task.objects.select_related("batch", "unit"), public_id=task_id, batch__provider=Provider.MTURK
    )
    assignment_id = request.GET.get("assignmentId", "")
    if not assignment_id or assignment_id == mturk_client.PREVIEW_ASSIGNMENT_ID:
        return _framable_by_mturk(
            render(
                request,
                "annotate/worker/task.html",
                task_context(task, preview=True, mturk=True, form=answer_form(task.kind, ranks=[])),
            )
        )
    worker_id, hit_id = request.GET.get("workerId", ""), request.GET.get("hitId", "")
    submit_to = _submit_host(request.GET.get("turkSubmitTo", ""))
    if not worker_id or submit_to is None:
        return _framable_by_mturk(
            worker_error(
                request, "Open this task from MTurk: the link lacks workerId or a valid turkSubmitTo.", 400
            )
        )
    try:
        worker = services.crowd_worker_get_or_create(provider=Provider.MTURK, external_id=worker_id)
        assignment = services.assignment_accept(
            task=task,
            worker=worker,
            mturk_assignment_id=assignment_id,
            mturk_hit_id=hit_id,
            turk_submit_to=submit_to,
        )
    except AnnotateError as exc:
        return _framable_by_mturk(worker_error(request, str(exc), exc.status, task.batch))
    if assignment.status != Assignment.Status.ACCEPTED:
        return _framable_by_mturk(worker_error(request, "You have already done this task.", 409, task.batch))
    ranks = selectors.task_image_ranks(task=task)
    return _framable_by_mturk(
        render(
            request,
            "annotate/worker/task.html",
            task_context(
                task,
                assignment=assignment,
                mturk=True,
                form=answer_form(task.kind, ranks=ranks),
                token=signing.dumps(str(assignment.public_id), salt=MTURK_TOKEN_SALT),
            ),
        )
    )


@csrf_exempt  # our cookies are third-party inside MTurk's frame; the signed token below stands in for CSRF
@xframe_options_exempt
@require_POST
def mturk_submit(request: HttpRequest, task_id: str) -> HttpResponse:
    """Store the answer, then hand the worker back to MTurk's externalSubmit with their assignmentId."""
    try:
        public_id = signing.loads(request.POST.get("token", ""), salt=MTURK_TOKEN_SALT)
    except signing.BadSignature:
        return _framable_by_mturk(worker_error(request, "This form is not valid; reload the task.", 403))
    assignment = get_object_or_404(
        Assignment.objects.select_related("task__batch", "task__unit"),
        public_id=public_id,
        task__public_id=task_id,
    )
    task = assignment.task
    ranks = selectors.task_image_ranks(task=task)
    form = answer_form(task.kind, request.POST, ranks=ranks)
    context = task_context(task, assignment=assignment, mturk=True, form=form, token=request.POST["token"])
    if not form.is_valid():
        return _framable_by_mturk(render(request, "annotate/worker/task.html", context, status=400))
    try:
        services.annotation_submit(assignment=assignment, **form.answer_kwargs())
    except AnnotateError as exc:
        return _framable_by_mturk(
            render(request, "annotate/worker/task.html", {**context, "error": str(exc)}, status=exc.status)
        )
    return _framable_by_mturk(
        render(
            request,
            "mturk/done.html",
            {
                "action": f"{assignment.turk_submit_to}/mturk/externalSubmit",
                "assignment_id": assignment.mturk_assignment_id,
            },
        )
    )
