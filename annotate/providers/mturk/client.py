"""Amazon Mechanical Turk through boto3's `mturk` client (the sandbox unless MTURK_SANDBOX=0).

Publishing creates one HIT type per batch and one HIT per task whose question is an ExternalQuestion pointing
at our MTurk task page; `RequesterAnnotation` carries the task id and `UniqueRequestToken` makes a retried
publish find the HIT it already made instead of creating a second one (and a retried bonus pay once). MTurk
hands out the assignment slots (MaxAssignments), our task page stores the answer and then posts to
`<turkSubmitTo>/mturk/externalSubmit`. The ids on our task page's URL can be typed by anyone, so an
assignment counts only once MTurk's own record of it (GetAssignment, ListAssignmentsForHIT) names the same
worker and HIT; MTurk keeps such a record only from the worker's submit there on.

A batch that requires qualifications gets, per qualification, an MTurk QualificationType whose test is the
qualification's gold units (`screening`; made once, its id kept on the qualification) and a requirement on
its HIT type: only a worker whose score reaches the accuracy threshold may accept its HITs.
`qualification_scores` reads the scores back for the batch sync.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from django.conf import settings
from django.urls import reverse

from annotate.providers.base import CrowdProvider, ProviderError, RemoteAssignment, Reply
from annotate.providers.mturk import screening

if TYPE_CHECKING:
    from annotate.models import Assignment, Batch, CrowdWorker, Qualification, Task

log = logging.getLogger(__name__)

SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
EXTERNAL_QUESTION_XSD = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd"
)
PREVIEW_ASSIGNMENT_ID = "ASSIGNMENT_ID_NOT_AVAILABLE"
# MTurk's worker sites: the only pages allowed to frame our MTurk task view, and to receive its form.
WORKER_SITES = ("https://worker.mturk.com", "https://workersandbox.mturk.com", "https://www.mturk.com")
SUBMIT_HOSTS = ("https://www.mturk.com", "https://workersandbox.mturk.com")


def mturk_client() -> Any:
    """A boto3 MTurk client for the sandbox unless settings.MTURK_SANDBOX is off."""
    import boto3

    endpoint = SANDBOX_ENDPOINT if settings.MTURK_SANDBOX else None
    return boto3.client("mturk", region_name=settings.MTURK_REGION, endpoint_url=endpoint)


def external_question(url: str) -> str:
    """The ExternalQuestion XML for `url` (FrameHeight 0 lets the page take the whole frame)."""
    if not url.startswith("https://"):
        raise ProviderError(
            f"MTurk shows only HTTPS pages; the task URL {url!r} is not HTTPS "
            "(set SITE_URL to the https:// address of this service)"
        )
    return (
        f'<ExternalQuestion xmlns="{EXTERNAL_QUESTION_XSD}">'
        f"<ExternalURL>{escape(url)}</ExternalURL><FrameHeight>0</FrameHeight></ExternalQuestion>"
    )


def task_url(task: Task) -> str:
    return settings.SITE_URL.rstrip("/") + reverse("annotate:mturk_task", args=[task.public_id])


def _already_processed(exc: ProviderError, token: str) -> bool:
    """Whether MTurk refused a call because its UniqueRequestToken `token` was used before (the earlier
    call went through): MTurk answers RequestError 'The idempotency token "<token>" has already been
    processed.'"""
    from botocore.exceptions import ClientError

    cause = exc.__cause__
    if not isinstance(cause, ClientError):
        return False
    error = cause.response.get("Error", {})
    message = str(error.get("Message", ""))
    return error.get("Code") == "RequestError" and token in message and "already been processed" in message


def _call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """Call `operation`, turning boto errors into a ProviderError that names the call."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr(client, operation)(**params)
    except ClientError as exc:
        raise ProviderError(
            f"MTurk {operation} failed: {exc.response.get('Error', {}).get('Message', exc)}"
        ) from exc
    except BotoCoreError as exc:
        raise ProviderError(f"MTurk {operation} failed: {exc}") from exc


class MTurkProvider(CrowdProvider):
    name = "mturk"
    confirms_later = True

    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mturk_client()
        return self._client

    def check_publishable(self, batch: Batch) -> None:
        external_question(settings.SITE_URL.rstrip("/") + "/")
        if batch.reward <= 0:
            raise ProviderError("an MTurk batch needs a reward above 0.00 USD")
        for qualification in batch.qualifications.order_by("name"):
            problem = screening.screening_problem(qualification)
            if problem:
                raise ProviderError(problem)

    def publish(self, batch: Batch) -> Reply:
        """Returns the QualificationTypes the HIT type requires ({qualification name: type id}; None when it
        requires none), for the audit trail."""
        self.check_publishable(batch)
        required = list(batch.qualifications.order_by("name"))
        type_ids = {q.pk: self.qualification_type_ensure(q) for q in required}
        if not batch.mturk_hit_type_id:
            params: dict[str, Any] = {
                "AutoApprovalDelayInSeconds": 3 * 24 * 3600,
                "AssignmentDurationInSeconds": int(batch.assignment_duration.total_seconds()),
                "Reward": f"{batch.reward:.2f}",
                "Title": batch.title[:128],
                "Keywords": "image, labeling, neural network, concept",
                "Description": (batch.instructions or batch.title)[:2000],
            }
            if required:
                params["QualificationRequirements"] = [
                    {
                        "QualificationTypeId": type_ids[q.pk],
                        "Comparator": "GreaterThanOrEqualTo",
                        "IntegerValues": [screening.required_score(q)],
                        "ActionsGuarded": "Accept",
                    }
                    for q in required
                ]
            response = _call(self.client, "create_hit_type", **params)
            batch.mturk_hit_type_id = response["HITTypeId"]
            batch.save(update_fields=["mturk_hit_type_id", "updated_at"])
        remaining = batch.expires_at - datetime.now(UTC) if batch.expires_at else batch.lifetime
        lifetime = max(60, int(remaining.total_seconds()))
        for task in batch.tasks.filter(mturk_hit_id="").order_by("position"):
            task.mturk_hit_id = self._create_hit(batch, task, lifetime)
            task.save(update_fields=["mturk_hit_id"])
        if batch.published_at is not None:
            self._set_expiration(batch, batch.expires_at)
        return {"qualification_types": {q.name: type_ids[q.pk] for q in required}} if required else None

    def qualification_type_ensure(self, qualification: Qualification) -> str:
        """The id of `qualification`'s QualificationType, made on first need (Active, scored by its test,
        never granted without it). A retry after a create whose answer was lost finds the type by its name,
        which MTurk keeps unique per requester."""
        if qualification.mturk_qualification_type_id:
            return qualification.mturk_qualification_type_id
        name = screening.type_name(qualification)
        try:
            response = _call(
                self.client,
                "create_qualification_type",
                Name=name,
                Keywords="screening, image, concept",
                Description=(
                    f"A short test before the tasks that require it: say which category each of "
                    f"{qualification.items.count()} image sets shares."
                ),
                QualificationTypeStatus="Active",
                RetryDelayInSeconds=screening.RETRY_DELAY_SECONDS,
                Test=screening.question_form(qualification),
                AnswerKey=screening.answer_key(qualification),
                TestDurationInSeconds=screening.duration_seconds(qualification),
                AutoGranted=False,
            )
            type_id = str(response["QualificationType"]["QualificationTypeId"])
        except ProviderError:
            found = self._find_qualification_type(name)
            if found is None:
                raise
            type_id = found
        qualification.mturk_qualification_type_id = type_id
        qualification.save(update_fields=["mturk_qualification_type_id"])
        return type_id

    def _find_qualification_type(self, name: str) -> str | None:
        params: dict[str, Any] = {
            "Query": name,
            "MustBeRequestable": False,
            "MustBeOwnedByCaller": True,
            "MaxResults": 100,
        }
        while True:
            page = _call(self.client, "list_qualification_types", **params)
            for found in page.get("QualificationTypes", []):
                if found.get("Name") == name:
                    return str(found["QualificationTypeId"])
            if not page.get("NextToken") or not page.get("QualificationTypes"):
                return None
            params["NextToken"] = page["NextToken"]

    def qualification_scores(self, type_id: str) -> dict[str, tuple[int | None, datetime | None]]:
        """{MTurk worker id: (score, when granted)} of every worker MTurk holds a score of `type_id` for; a
        revoked one counts as no score (None)."""
        params: dict[str, Any] = {"QualificationTypeId": type_id, "MaxResults": 100}
        scores: dict[str, tuple[int | None, datetime | None]] = {}
        while True:
            page = _call(self.client, "list_workers_with_qualification_type", **params)
            for found in page.get("Qualifications", []):
                granted = found.get("Status", "Granted") == "Granted"
                value = found.get("IntegerValue")
                scores[str(found["WorkerId"])] = (
                    int(value) if granted and value is not None else None,
                    found.get("GrantTime"),
                )
            if not page.get("NextToken") or not page.get("Qualifications"):
                return scores
            params["NextToken"] = page["NextToken"]

    def _create_hit(self, batch: Batch, task: Task, lifetime: int) -> str:
        try:
            response = _call(
                self.client,
                "create_hit_with_hit_type",
                HITTypeId=batch.mturk_hit_type_id,
                MaxAssignments=batch.assignments_per_task,
                LifetimeInSeconds=lifetime,
                Question=external_question(task_url(task)),
                RequesterAnnotation=str(task.public_id),
                UniqueRequestToken=task.public_id.hex,
            )
        except ProviderError:
            existing = self._find_hit(str(task.public_id))
            if existing is None:
                raise
            return existing
        return response["HIT"]["HITId"]

    def _find_hit(self, annotation: str) -> str | None:
        """The HIT an earlier (interrupted) publish made for this task, found by its RequesterAnnotation."""
        params: dict[str, Any] = {"MaxResults": 100}
        while True:
            page = _call(self.client, "list_hits", **params)
            for hit in page.get("HITs", []):
                if hit.get("RequesterAnnotation") == annotation:
                    return hit["HITId"]
            if not page.get("NextToken") or not page.get("HITs"):
                return None
            params["NextToken"] = page["NextToken"]

    def _set_expiration(self, batch: Batch, when: datetime | None) -> None:
        expire_at = when or datetime.now(UTC)
        for hit_id in batch.tasks.exclude(mturk_hit_id="").values_list("mturk_hit_id", flat=True):
            _call(self.client, "update_expiration_for_hit", HITId=hit_id, ExpireAt=expire_at)

    def pause(self, batch: Batch) -> None:
        self._set_expiration(batch, None)

    def cancel(self, batch: Batch) -> None:
        self._set_expiration(batch, None)

    def approve(self, assignment: Assignment, feedback: str) -> None:
        if not assignment.mturk_assignment_id:
            return
        params: dict[str, Any] = {"AssignmentId": assignment.mturk_assignment_id}
        if feedback:
            params["RequesterFeedback"] = feedback[:1024]
        _call(self.client, "approve_assignment", **params)

    def reject(self, assignment: Assignment, feedback: str, category: str = "") -> None:
        if not feedback.strip():
            raise ProviderError("MTurk requires feedback to reject an assignment")
        if not assignment.mturk_assignment_id:
            return
        _call(
            self.client,
            "reject_assignment",
            AssignmentId=assignment.mturk_assignment_id,
            RequesterFeedback=feedback[:1024],
        )
        # MTurk does not reopen a rejected assignment; ask for one more so the unit still gets its answers.
        hit_id = assignment.mturk_hit_id or assignment.task.mturk_hit_id
        try:
            _call(
                self.client,
                "create_additional_assignments_for_hit",
                HITId=hit_id,
                NumberOfAdditionalAssignments=1,
                UniqueRequestToken=f"more-{assignment.public_id.hex}",
            )
        except ProviderError:
            log.warning("could not add an assignment to HIT %s after a rejection", hit_id, exc_info=True)

    def bonus(self, assignment: Assignment, amount: Decimal, reason: str) -> None:
        """Pay once: a retry after a pay that went through (our save failed) meets MTurk's refusal of the
        used token, which means the bonus is paid."""
        token = f"bonus-{assignment.public_id.hex}"
        try:
            _call(
                self.client,
                "send_bonus",
                WorkerId=assignment.worker.external_id,
                BonusAmount=f"{amount:.2f}",
                AssignmentId=assignment.mturk_assignment_id,
                Reason=reason,
                UniqueRequestToken=token,
            )
        except ProviderError as exc:
            if not _already_processed(exc, token):
                raise
            log.info("bonus for assignment %s was already paid on MTurk", assignment.mturk_assignment_id)

    def block(self, worker: CrowdWorker, reason: str) -> None:
        _call(self.client, "create_worker_block", WorkerId=worker.external_id, Reason=reason)

    def unblock(self, worker: CrowdWorker) -> None:
        _call(self.client, "delete_worker_block", WorkerId=worker.external_id)

    def list_assignments(self, hit_id: str) -> list[dict[str, Any]]:
        """Every assignment MTurk holds for `hit_id`, following NextToken through all pages."""
        params: dict[str, Any] = {"HITId": hit_id, "MaxResults": 100}
        found: list[dict[str, Any]] = []
        while True:
            page = _call(self.client, "list_assignments_for_hit", **params)
            found.extend(page.get("Assignments", []))
            if not page.get("NextToken") or not page.get("Assignments"):
                return found
            params["NextToken"] = page["NextToken"]

    def remote_assignments(self, batch: Batch) -> Iterator[RemoteAssignment]:
        """Every assignment MTurk holds for the batch's HITs, one HIT's pages at a time."""
        for task in batch.tasks.exclude(mturk_hit_id="").order_by("position"):
            for remote in self.list_assignments(task.mturk_hit_id):
                yield _remote(remote, hit_id=task.mturk_hit_id)

    def remote_assignment(self, assignment: Assignment) -> RemoteAssignment | None:
        """MTurk's record of the assignment (GetAssignment); None on any error: MTurk has no record of an
        assignment before its worker submits it there, and an error is never a confirmation."""
        if not assignment.mturk_assignment_id:
            return None
        try:
            found = _call(self.client, "get_assignment", AssignmentId=assignment.mturk_assignment_id)
        except ProviderError as exc:
            log.info("MTurk does not confirm assignment %s yet: %s", assignment.mturk_assignment_id, exc)
            return None
        remote = found.get("Assignment") or {}
        if not remote.get("AssignmentId"):
            return None
        return _remote(remote, hit_id=str(remote.get("HITId", "")))


def _remote(remote: dict[str, Any], *, hit_id: str) -> RemoteAssignment:
    return RemoteAssignment(
        external_id=remote["AssignmentId"],
        status=_STATUS.get(remote["AssignmentStatus"], remote["AssignmentStatus"]),
        feedback=remote.get("RequesterFeedback", ""),
        worker_id=str(remote.get("WorkerId", "")),
        hit_id=hit_id,
    )


_STATUS = {
    "Submitted": RemoteAssignment.SUBMITTED,
    "Approved": RemoteAssignment.APPROVED,
    "Rejected": RemoteAssignment.REJECTED,
}
