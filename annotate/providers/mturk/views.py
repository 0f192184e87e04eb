"""MTurk's ExternalQuestion frame: the task page MTurk shows a worker, and the submit that hands them back.

Our cookies are third-party inside MTurk's frame, so the assignment travels as a signed token instead. The
ids on the page's URL (assignmentId, workerId, hitId) are what MTurk appends, but anyone can type them: they
are checked for shape before anything reads the database, an assignment they open starts unverified (no
real slot, no statistic, no gold accounting until MTurk confirms it), and the token goes only to the
request that names the assignment's own assignmentId and workerId.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.core import signing
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, render
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
    require_safe,
)

from annotate import selectors, services
from annotate.errors import AnnotateError
from annotate.forms import (
    answer_form,
)
from annotate.models import Assignment, Provider, QualificationItem, Task
from annotate.providers.mturk import client as mturk_client
from annotate.providers.mturk import screening
from annotate.selectors.qualifications import qualification_item_image
from annotate.views.images import unit_image_response
from annotate.views.worker import slot_take_throttled, task_context, too_many_requests, worker_error

MTURK_TOKEN_SALT = "annotate.mturk.assignment"
MTURK_ID = re.compile(r"[A-Za-z0-9]{1,100}")
"""MTurk's ids are upper-case letters and digits, about 30 of them; our columns hold 100."""
NOT_YOURS = "This MTurk assignment belongs to another worker or HIT. Open the task from MTurk."


def _framable_by_mturk(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = "frame-ancestors " + " ".join(mturk_client.WORKER_SITES)
    return response


def _submit_host(turk_submit_to: str) -> str | None:
    host = turk_submit_to.rstrip("/")
    return host if host in mturk_client.SUBMIT_HOSTS else None


@dataclass(frozen=True)
class MTurkIds:
    assignment: str
    worker: str
    hit: str

    @property
    def preview(self) -> bool:
        return not self.assignment or self.assignment == mturk_client.PREVIEW_ASSIGNMENT_ID


def _ids(query: QueryDict) -> MTurkIds | str:
    """The ids MTurk appends, or what is wrong with them (checked before any of them meets the database)."""
    ids = MTurkIds(query.get("assignmentId", ""), query.get("workerId", ""), query.get("hitId", ""))
    checked = {"hitId": ids.hit} if ids.preview else {"assignmentId": ids.assignment, "hitId": ids.hit}
    if not ids.preview:
        checked["workerId"] = ids.worker
    bad = [name for name, value in checked.items() if value and not MTURK_ID.fullmatch(value)]
    if bad:
        names = ", ".join(bad)
        return f"Open this task from MTurk: {names} is not an MTurk id (at most 100 letters and digits)."
    if not ids.preview and not (ids.worker and ids.hit):
        return "Open this task from MTurk: the link lacks workerId or hitId."
    return ids


@xframe_options_exempt
@require_http_methods(["GET"])
def mturk_task(request: HttpRequest, task_id: str) -> HttpResponse:
    """The ExternalQuestion page: a preview, or the form for MTurk's assignmentId/workerId."""
    ids = _ids(request.GET)
    if isinstance(ids, str):
        return _framable_by_mturk(worker_error(request, ids, 400))
    task = get_object_or_404(
        Task.objects.select_related("batch"), public_id=task_id, batch__provider=Provider.MTURK
    )
    if ids.preview:
        return _framable_by_mturk(
            render(
                request,
                "annotate/worker/task.html",
                task_context(task, preview=True, mturk=True, form=answer_form(task.kind, ranks=[])),
            )
        )
    submit_to = _submit_host(request.GET.get("turkSubmitTo", ""))
    if submit_to is None:
        return _framable_by_mturk(
            worker_error(request, "Open this task from MTurk: the link lacks a valid turkSubmitTo.", 400)
        )
    if ids.hit != task.mturk_hit_id:
        return _framable_by_mturk(worker_error(request, NOT_YOURS, 403, task.batch))
    known = Assignment.objects.filter(mturk_assignment_id=ids.assignment).select_related("worker").first()
    if known is not None and (known.task_id != task.pk or known.worker.external_id != ids.worker):
        return _framable_by_mturk(worker_error(request, NOT_YOURS, 403, task.batch))
    if slot_take_throttled(request):
        return _framable_by_mturk(too_many_requests(request, task.batch))
    try:
        worker = services.crowd_worker_get_or_create(provider=Provider.MTURK, external_id=ids.worker)
        assignment = services.assignment_accept(
            task=task,
            worker=worker,
            mturk_assignment_id=ids.assignment,
            mturk_hit_id=ids.hit,
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
        Assignment.objects.select_related("task__batch"), public_id=public_id, task__public_id=task_id
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


@require_safe
def mturk_screening_image(request: HttpRequest, qualification_id: str, token: str) -> FileResponse:
    """An image of an MTurk qualification test, under a name signed for that qualification (MTurk's test
    page loads it from the worker's browser, without our cookies); a forged or foreign name is a 404."""
    named = screening.screening_image_unsign(qualification_id, token)
    if named is None:
        raise Http404("No such image.")
    item_id, rank = named
    item = get_object_or_404(
        QualificationItem.objects.select_related("qualification", "unit"),
        public_id=item_id,
        qualification__public_id=qualification_id,
    )
    return unit_image_response(qualification_item_image(item=item, rank=rank))
