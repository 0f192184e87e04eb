"""Worker pages: the batch link (local and Prolific), the personal link, task preview, the answer form,
returning a task, and the worker's status page (their answers, decisions, feedback and bonuses).

A worker is identified by the session, per batch: the Prolific study URL logs in its participant, and on the
local link starting makes a new worker whose personal link (the worker's id signed for the batch) is the
only way back in; a typed name never logs anyone in. MTurk's frame has its own pages in
`annotate.providers.mturk.views`. Creating workers and taking slots are throttled per client IP.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
    require_safe,
)
from django_ratelimit.core import is_ratelimited  # type: ignore[import-untyped]

from annotate import selectors, services
from annotate.errors import AnnotateError
from annotate.forms import (
    TwoAfcAnswerForm,
    WorkerStartForm,
    answer_form,
)
from annotate.models import Assignment, Batch, CrowdWorker, Provider, Task
from annotate.providers import get_provider, prolific
from annotate.selectors import twoafc as twoafc_selectors
from annotate.selectors.qualifications import FAILED_MESSAGE, qualification_refusal
from annotate.services import twoafc as twoafc_services
from annotate.views.images import CACHE_CONTROL, unit_image_response
from runs.featviz import featviz_keys

SESSION_WORKERS = "annotate_workers"
"""Session key: {batch public id: the public id of the worker this browser is on that batch}."""
SESSION_PROLIFIC = "annotate_prolific"
WORKER_LINK_SALT = "annotate.worker.link"
_PROLIFIC_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
THROTTLED = "Too many requests came from your network just now. Please try again in a minute."
INVALID_LINK = "This personal link is not valid. Check that you copied all of it."


def worker_error(request: HttpRequest, message: str, status: int, batch: Batch | None = None) -> HttpResponse:
    return render(request, "annotate/worker/error.html", {"message": message, "batch": batch}, status=status)


def throttled(request: HttpRequest, *, group: str, rate: str) -> bool:
    """Count this request against its client IP's allowance `rate` (a django-ratelimit rate such as 30/m) in
    `group`; True when it is over."""
    return bool(is_ratelimited(request, group=group, key="ip", rate=rate, increment=True))


def too_many_requests(request: HttpRequest, batch: Batch | None = None) -> HttpResponse:
    return worker_error(request, THROTTLED, 429, batch)


def slot_take_throttled(request: HttpRequest) -> bool:
    return throttled(request, group="annotate.slot_take", rate=settings.RATELIMIT_SLOT_TAKE)


def _worker_create_throttled(request: HttpRequest) -> bool:
    return throttled(request, group="annotate.worker_create", rate=settings.RATELIMIT_WORKER_CREATE)


def _link_signer(batch: Batch) -> signing.Signer:
    """Signs a worker's public id for one batch: the batch is in the salt, so a link works on its own batch
    only; no timestamp, so the link reads the same wherever it is shown."""
    return signing.Signer(salt=f"{WORKER_LINK_SALT}:{batch.public_id}")


def personal_link(batch: Batch, worker: CrowdWorker) -> str:
    """The path that logs a browser in as `worker` on `batch` (signed, so nobody can make one up)."""
    token = _link_signer(batch).sign(worker.public_id.hex)
    return reverse("annotate:worker_link", args=[batch.public_id, token])


def session_worker(request: HttpRequest, batch: Batch) -> CrowdWorker | None:
    public_id = request.session.get(SESSION_WORKERS, {}).get(str(batch.public_id))
    return CrowdWorker.objects.filter(public_id=public_id).first() if public_id else None


def _login_worker(request: HttpRequest, batch: Batch, worker: CrowdWorker) -> None:
    workers = dict(request.session.get(SESSION_WORKERS, {}))
    request.session.cycle_key()
    workers[str(batch.public_id)] = str(worker.public_id)
    request.session[SESSION_WORKERS] = workers


def link_context(request: HttpRequest, batch: Batch, worker: CrowdWorker | None) -> dict[str, Any]:
    """The link to a known worker's status page, and the personal link to show a local worker (Prolific and
    MTurk bring their people back themselves)."""
    if worker is None or batch.provider == Provider.MTURK:
        return {}
    links = {"status_url": reverse("annotate:worker_status", args=[batch.public_id])}
    if batch.provider == Provider.LOCAL:
        links["personal_link"] = request.build_absolute_uri(personal_link(batch, worker))
    return links


def task_context(task: Task, **extra: Any) -> dict[str, Any]:
    """What a worker's task page shows: the batch's wording and the task's images, served by
    `annotate:task_image` under the task's id and rank only, and nothing about the unit; with the batch's
    `show_featviz`, the unit's feature visualizations, served by `annotate:task_featviz` the same way."""
    return {
        "task": task,
        "batch": task.batch,
        "images": selectors.task_images(task=task),
        "featviz": range(len(_task_featviz_keys(task))),
        **extra,
    }


def _task_featviz_keys(task: Task) -> list[str]:
    """The unit's feature-visualization keys when the batch shows them on its label tasks, else []."""
    if not task.batch.show_featviz or task.kind != Task.Kind.LABEL or task.unit_id is None:
        return []
    return featviz_keys(unit=task.unit)


@require_safe
def task_featviz(request: HttpRequest, task_id: str, index: int) -> FileResponse:
    """Feature visualization `index` of the task's unit, as a bare image (no file name: the stored key names
    the run and layer), or 404 when the batch does not show them."""
    task = get_object_or_404(Task.objects.select_related("batch", "unit"), public_id=task_id)
    keys = _task_featviz_keys(task)
    if not 0 <= index < len(keys):
        raise Http404("No such image.")
    try:
        handle = default_storage.open(keys[index], "rb")
    except OSError:
        raise Http404("No such image.") from None
    response = FileResponse(handle, content_type="image/png")
    response.headers.pop("Content-Disposition", None)
    response["Cache-Control"] = CACHE_CONTROL
    return response


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
        if _worker_create_throttled(request):
            return too_many_requests(request, batch)
        worker = services.crowd_worker_get_or_create(
            provider=Provider.PROLIFIC, external_id=ids[prolific.PARAM_WORKER]
        )
        _login_worker(request, batch, worker)
        request.session[SESSION_PROLIFIC] = {
            "prolific_study_id": ids[prolific.PARAM_STUDY],
            "prolific_session_id": ids[prolific.PARAM_SESSION],
        }
        return redirect("annotate:batch_next", batch_id=batch.public_id)
    form = WorkerStartForm(request.POST or None, initial={"worker_id": request.GET.get("worker", "")})
    if request.method == "POST":
        if _worker_create_throttled(request):
            return too_many_requests(request, batch)
        if not form.is_valid():
            return render(
                request,
                "annotate/worker/start.html",
                {"batch": batch, "form": form, **_start_context(batch)},
                status=400,
            )
        worker = _returning_local_worker(request, batch) or services.crowd_worker_create(
            provider=Provider.LOCAL, label=form.cleaned_data["worker_id"]
        )
        return redirect(personal_link(batch, worker))
    current = session_worker(request, batch)
    return render(
        request,
        "annotate/worker/start.html",
        {"batch": batch, "form": form, "current": current, **_start_context(batch)},
    )


def _returning_local_worker(request: HttpRequest, batch: Batch) -> CrowdWorker | None:
    """The local worker this browser last worked as on another batch, when `batch` requires a
    qualification: their qualification results live on that worker record, so they start as it again
    (without one, every start on the local link makes a new worker)."""
    if not batch.qualifications.exists():
        return None
    public_ids = [
        pid for key, pid in request.session.get(SESSION_WORKERS, {}).items() if key != str(batch.public_id)
    ]
    return (
        CrowdWorker.objects.filter(public_id__in=public_ids, provider=Provider.LOCAL, blocked=False)
        .order_by("-created_at")
        .first()
    )


def _start_context(batch: Batch) -> dict[str, Any]:
    """What the start page tells a worker before they begin: pay, time and number of tasks."""
    return {
        "task_count": batch.tasks.count(),
        "time_allowed": _duration_words(batch.assignment_duration),
        "typical_time_ms": selectors.batch_typical_time_ms(batch=batch),
    }


def _duration_words(duration: timedelta) -> str:
    """A time limit as people say it: '30 minutes', '1 hour 30 minutes', '45 seconds'."""
    seconds = int(duration.total_seconds())
    if seconds < 60:
        return f"{seconds} second{pluralize(seconds)}"
    hours, minutes = divmod(seconds // 60, 60)
    parts = [f"{hours} hour{pluralize(hours)}"] if hours else []
    if minutes or not hours:
        parts.append(f"{minutes} minute{pluralize(minutes)}")
    return " ".join(parts)


@require_safe
def worker_link(request: HttpRequest, batch_id: str, token: str) -> HttpResponse:
    """A worker's personal link: logs this browser in as them on the batch, then on to their next task."""
    batch = get_object_or_404(Batch, public_id=batch_id)
    try:
        public_id = _link_signer(batch).unsign(token)
    except signing.BadSignature:
        return worker_error(request, INVALID_LINK, 404, batch)
    worker = CrowdWorker.objects.filter(public_id=public_id).first()
    if worker is None:
        return worker_error(request, INVALID_LINK, 404, batch)
    _login_worker(request, batch, worker)
    return redirect("annotate:batch_next", batch_id=batch.public_id)


@require_safe
def batch_next(request: HttpRequest, batch_id: str) -> HttpResponse:
    """Resume the worker's open assignment, else preview the next task they can take, else finish: the
    completion (Prolific's code) only for a worker with finished work in this batch."""
    batch = get_object_or_404(Batch, public_id=batch_id)
    worker = session_worker(request, batch)
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
        refusal = qualification_refusal(batch=batch, worker=worker)
        if refusal == FAILED_MESSAGE:
            return worker_error(request, refusal, 403, batch)
        if refusal:
            return redirect("annotate:qualification_test", batch_id=batch.public_id)
        services.assignment_expire_overdue()
        task = selectors.tasks_open_for_worker(batch=batch, worker=worker).first()
        if task is not None:
            return redirect("annotate:task_preview", task_id=task.public_id)
    context = {"batch": batch, "worker": worker, **link_context(request, batch, worker)}
    if not selectors.worker_has_finished_work(batch=batch, worker=worker):
        if batch.state != Batch.State.PUBLISHED:
            return worker_error(
                request,
                f"This batch is {batch.get_state_display().lower()} and takes no new work.",
                409,
                batch,
            )
        return render(request, "annotate/worker/no_task.html", context)
    completion = get_provider(batch.provider).completion_url(batch)
    if completion:
        return redirect(completion)
    return render(request, "annotate/worker/finished.html", context)


@require_safe
def worker_status(request: HttpRequest, batch_id: str) -> HttpResponse:
    """The session worker's own answers in the batch with the requester's decisions, feedback and bonuses;
    never a unit's automatic label, a gold answer or which task was a check (unless they failed it)."""
    batch = get_object_or_404(Batch, public_id=batch_id)
    if batch.provider == Provider.MTURK:
        return worker_error(request, "This batch runs on Amazon Mechanical Turk; see your work there.", 404)
    worker = session_worker(request, batch)
    if worker is None:
        return worker_error(
            request,
            "Open your personal link (or the study link) first: it tells this page who you are.",
            403,
            batch,
        )
    return render(
        request,
        "annotate/worker/status.html",
        {
            "batch": batch,
            "worker": worker,
            "status": selectors.worker_status(batch=batch, worker=worker),
            **link_context(request, batch, worker),
        },
    )


@require_http_methods(["GET", "POST"])
def task_preview(request: HttpRequest, task_id: str) -> HttpResponse:
    """The task's images with the form disabled; POST accepts the task for the session's worker."""
    task = get_object_or_404(Task.objects.select_related("batch"), public_id=task_id)
    if task.batch.provider == Provider.MTURK:
        raise Http404("MTurk tasks are opened from MTurk.")
    worker = session_worker(request, task.batch)
    links = link_context(request, task.batch, worker)
    if request.method == "POST":
        if worker is None:
            return redirect("annotate:batch_start", batch_id=task.batch.public_id)
        if slot_take_throttled(request):
            return too_many_requests(request, task.batch)
        try:
            assignment = services.assignment_accept(
                task=task, worker=worker, **request.session.get(SESSION_PROLIFIC, {})
            )
        except AnnotateError as exc:
            if task.kind == Task.Kind.TWOAFC:
                return _twoafc_page(request, task, preview=True, error=str(exc), status=exc.status, **links)
            return render(
                request,
                "annotate/worker/task.html",
                task_context(
                    task, preview=True, form=answer_form(task.kind, ranks=[]), error=str(exc), **links
                ),
                status=exc.status,
            )
        return redirect("annotate:assignment", assignment_id=assignment.public_id)
    if task.kind == Task.Kind.TWOAFC:
        return _twoafc_page(request, task, preview=True, **links)
    return render(
        request,
        "annotate/worker/task.html",
        task_context(task, preview=True, form=answer_form(task.kind, ranks=[]), **links),
    )


def _own_assignment(request: HttpRequest, assignment_id: str) -> Assignment:
    """One of the session worker's own assignments; anyone else's is a 404, as a missing one is."""
    assignment = get_object_or_404(
        Assignment.objects.select_related("task__batch", "worker"), public_id=assignment_id
    )
    worker = session_worker(request, assignment.task.batch)
    if worker is None or worker.pk != assignment.worker_id:
        raise Http404("No such assignment.")
    return assignment


@require_http_methods(["GET", "POST"])
def assignment_work(request: HttpRequest, assignment_id: str) -> HttpResponse:
    """The answer form of one of the session worker's own assignments."""
    assignment = _own_assignment(request, assignment_id)
    task = assignment.task
    links = link_context(request, task.batch, assignment.worker)
    if task.kind == Task.Kind.TWOAFC:
        return _twoafc_work(request, assignment, links)
    ranks = selectors.task_image_ranks(task=task)
    if request.method == "GET":
        if assignment.status == Assignment.Status.ACCEPTED and assignment.deadline > timezone.now():
            return render(
                request,
                "annotate/worker/task.html",
                task_context(task, assignment=assignment, form=answer_form(task.kind, ranks=ranks), **links),
            )
        if assignment.status in (Assignment.Status.ACCEPTED, Assignment.Status.EXPIRED):
            return worker_error(request, "The time for this task ran out.", 410, task.batch)
        return redirect("annotate:batch_next", batch_id=task.batch.public_id)
    form = answer_form(task.kind, request.POST, ranks=ranks)
    context = task_context(task, assignment=assignment, form=form, **links)
    if not form.is_valid():
        return render(request, "annotate/worker/task.html", context, status=400)
    try:
        services.annotation_submit(assignment=assignment, **form.answer_kwargs())
    except AnnotateError as exc:
        return render(request, "annotate/worker/task.html", {**context, "error": str(exc)}, status=exc.status)
    done = selectors.worker_answered_count(batch=task.batch, worker=assignment.worker)
    messages.success(request, f"Saved — task {done} of {task.batch.tasks.count()}.")
    return redirect("annotate:batch_next", batch_id=task.batch.public_id)


@require_POST
def assignment_return(request: HttpRequest, assignment_id: str) -> HttpResponse:
    assignment = _own_assignment(request, assignment_id)
    try:
        services.assignment_return(assignment=assignment)
    except AnnotateError as exc:
        return worker_error(request, str(exc), exc.status, assignment.task.batch)
    return redirect("annotate:batch_next", batch_id=assignment.task.batch.public_id)


def _twoafc_page(request: HttpRequest, task: Task, *, status: int = 200, **context: Any) -> HttpResponse:
    """A 2AFC trial page: the references and queries come by number and side under the assignment's id
    (`annotate:trial_reference`, `annotate:trial_featviz`, `annotate:trial_query`), so nothing on the
    page, its URLs or its alt texts tells which query is the strong one."""
    assignment = context.get("assignment")
    view = twoafc_selectors.trial_view(assignment=assignment) if assignment is not None else None
    return render(
        request,
        "annotate/worker/twoafc.html",
        {
            "task": task,
            "batch": task.batch,
            "form": context.pop("form", None) or TwoAfcAnswerForm(),
            "natural": range(view.natural) if view else (),
            "featviz": range(view.featviz) if view else (),
            "sides": (("left", "1", "←"), ("right", "2", "→")),
            **context,
        },
        status=status,
    )


def _twoafc_work(request: HttpRequest, assignment: Assignment, links: dict[str, Any]) -> HttpResponse:
    """A 2AFC assignment: GET serves the trial (fixing its condition, sides and serving time once); POST
    stores the answer once."""
    task = assignment.task
    if request.method == "GET":
        if assignment.status == Assignment.Status.ACCEPTED and assignment.deadline > timezone.now():
            served = twoafc_services.twoafc_trial_serve(assignment=assignment)
            return _twoafc_page(request, task, assignment=served, **links)
        if assignment.status in (Assignment.Status.ACCEPTED, Assignment.Status.EXPIRED):
            return worker_error(request, "The time for this task ran out.", 410, task.batch)
        return redirect("annotate:batch_next", batch_id=task.batch.public_id)
    form = TwoAfcAnswerForm(request.POST)
    if not form.is_valid():
        return _twoafc_page(request, task, assignment=assignment, form=form, status=400, **links)
    try:
        twoafc_services.twoafc_answer_submit(
            assignment=assignment,
            choice=form.cleaned_data["choice"],
            confidence=form.cleaned_data["confidence"],
        )
    except AnnotateError as exc:
        return _twoafc_page(
            request, task, assignment=assignment, form=form, error=str(exc), status=exc.status, **links
        )
    done = selectors.worker_answered_count(batch=task.batch, worker=assignment.worker)
    messages.success(request, f"Saved — trial {done} of {task.batch.tasks.count()}.")
    return redirect("annotate:batch_next", batch_id=task.batch.public_id)


def _open_trial(request: HttpRequest, assignment_id: str) -> Assignment:
    """The session worker's own accepted, served 2AFC assignment; anything else is a 404."""
    assignment = _own_assignment(request, assignment_id)
    if (
        assignment.task.kind != Task.Kind.TWOAFC
        or assignment.status != Assignment.Status.ACCEPTED
        or not assignment.trial
    ):
        raise Http404("No such image.")
    return assignment


@require_safe
def trial_reference(request: HttpRequest, assignment_id: str, number: int) -> FileResponse:
    """Natural reference `number` of the trial, when its condition shows natural references."""
    assignment = _open_trial(request, assignment_id)
    return unit_image_response(twoafc_selectors.trial_natural_image(assignment=assignment, number=number))


@require_safe
def trial_featviz(request: HttpRequest, assignment_id: str, number: int) -> FileResponse:
    """Feature visualization `number` of the trial's unit, when its condition shows them."""
    key = twoafc_selectors.trial_featviz_key(assignment=_open_trial(request, assignment_id), number=number)
    if key is None:
        raise Http404("No such image.")
    try:
        handle = default_storage.open(key, "rb")
    except OSError:
        raise Http404("No such image.") from None
    response = FileResponse(handle, content_type="image/png")
    response.headers.pop("Content-Disposition", None)
    response["Cache-Control"] = CACHE_CONTROL
    return response


@require_safe
def trial_query(request: HttpRequest, assignment_id: str, side: str) -> HttpResponse:
    """The query image on `side` (left or right), re-encoded so it carries no name: which one is the strong
    query is known to the server only."""
    png = twoafc_selectors.trial_query_png(assignment=_open_trial(request, assignment_id), side=side)
    if png is None:
        raise Http404("No such image.")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = CACHE_CONTROL
    return response
