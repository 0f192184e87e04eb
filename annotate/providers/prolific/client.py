"""Prolific as a crowd provider: the batch link is the study URL, and with PROLIFIC_API_TOKEN set every
decision is mirrored through Prolific's API.

A Prolific *submission* is one participant's whole session on the study: Prolific hands our batch link
PROLIFIC_PID, STUDY_ID and SESSION_ID (the submission id, kept on each of the participant's assignments),
and the participant does as many of the batch's tasks as are free for them before going back to Prolific
with the completion code. So one study holds `assignments_per_task` places (each participant can answer
every task once), its reward is the batch's reward per task times its tasks, and approving or rejecting an
answer approves or rejects that participant's submission: Prolific ignores an approval repeated for the
same submission and refuses to reject an approved one.

Without a token nothing is called: the requester creates the study by hand and repeats decisions there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from annotate.models import BonusPayment
from annotate.providers.base import (
    BulkApproval,
    BulkBonus,
    CrowdProvider,
    ProviderError,
    RemoteAssignment,
    Reply,
)
from annotate.providers.prolific.api import ProlificAPI, ProlificError, Retry

if TYPE_CHECKING:
    from annotate.models import Assignment, Batch, CrowdWorker

log = logging.getLogger(__name__)

PARAM_WORKER = "PROLIFIC_PID"
PARAM_STUDY = "STUDY_ID"
PARAM_SESSION = "SESSION_ID"
REJECT_MESSAGE_MIN = 100
"""Prolific refuses a rejection whose message to the participant is shorter than this."""
REJECTION_CATEGORIES = {
    "TOO_QUICKLY": "Too quickly",
    "TOO_SLOWLY": "Too slowly",
    "FAILED_INSTRUCTIONS": "Failed instructions",
    "INCOMP_LONGITUDINAL": "Incomplete longitudinal",
    "FAILED_CHECK": "Failed attention check",
    "LOW_EFFORT": "Low effort",
    "MALINGERING": "Malingering",
    "NO_CODE": "No completion code",
    "BAD_CODE": "Bad completion code",
    "NO_DATA": "No data",
    "UNSUPP_DEVICE": "Unsupported device",
    "OTHER": "Other",
}
"""Prolific's rejection categories (its `rejection_category` enum) and how pages name them."""

# Study statuses (Prolific's words).
UNPUBLISHED = "UNPUBLISHED"
ACTIVE = "ACTIVE"
PAUSED = "PAUSED"
STOPPED = ("AWAITING REVIEW", "COMPLETED")
"""A stopped study (by us, by the requester in Prolific, or full) takes no new participants."""

# Submission statuses (Prolific's words) and how `RemoteAssignment` says them.
RETURNED = "RETURNED"
TIMED_OUT = "TIMED-OUT"
_SUBMISSION_STATUS = {
    "AWAITING REVIEW": RemoteAssignment.SUBMITTED,
    "APPROVED": RemoteAssignment.APPROVED,
    "REJECTED": RemoteAssignment.REJECTED,
}


def remote_status(prolific_status: str) -> str:
    """A submission status as `RemoteAssignment` says it (Prolific's own word for the others)."""
    return _SUBMISSION_STATUS.get(prolific_status, prolific_status)


def study_url(batch: Batch) -> str:
    """The batch link with Prolific's placeholders, which Prolific fills in for each participant."""
    params = {key: "{{%" + key + "%}}" for key in (PARAM_WORKER, PARAM_STUDY, PARAM_SESSION)}
    path = reverse("annotate:batch_start", args=[batch.public_id])
    return settings.SITE_URL.rstrip("/") + path + "?" + urlencode(params, safe="{}%")


def reward_cents(batch: Batch) -> int:
    """What a participant who answers every task earns: the reward per task times the tasks, in cents."""
    return int((batch.reward * batch.tasks.count() * 100).to_integral_value())


def _submission_id(assignment: Assignment) -> str:
    if not assignment.prolific_session_id:
        raise ProviderError(
            "Prolific: this assignment has no Prolific submission id (SESSION_ID), so nothing can be sent "
            "for it; it was not opened from the Prolific study"
        )
    return assignment.prolific_session_id


class ProlificProvider(CrowdProvider):
    name = "prolific"

    def __init__(self, api: ProlificAPI | None = None) -> None:
        self._api = api

    @property
    def connected(self) -> bool:
        """Whether decisions go through Prolific's API (a token is set) or are recorded here only."""
        return self._api is not None or bool(settings.PROLIFIC_API_TOKEN)

    @property
    def api(self) -> ProlificAPI:
        if self._api is None:
            self._api = ProlificAPI.from_settings()
        return self._api

    def check_publishable(self, batch: Batch) -> None:
        if not batch.prolific_completion_code.strip():
            raise ProviderError("a Prolific batch needs the study's completion code before it is published")
        if self.connected and batch.prolific_study_status in STOPPED:
            raise ProviderError(
                f"the Prolific study {batch.prolific_study_id} is stopped ({batch.prolific_study_status}) "
                "and takes no new participants; make a new batch for more answers"
            )
        if self.connected and reward_cents(batch) < 1:
            raise ProviderError("a Prolific study needs a reward above 0.00")

    def completion_url(self, batch: Batch) -> str:
        return f"{settings.PROLIFIC_COMPLETION_URL}?{urlencode({'cc': batch.prolific_completion_code})}"

    def study_draft(self, batch: Batch) -> dict[str, Any]:
        """The draft study Prolific is asked to create for `batch`."""
        tasks = batch.tasks.count()
        minutes = max(1, tasks * settings.PROLIFIC_MINUTES_PER_TASK)
        return {
            "name": batch.title[:120],
            "internal_name": f"unitscope batch {batch.public_id}",
            "description": batch.instructions or batch.title,
            "external_study_url": study_url(batch),
            "prolific_id_option": "url_parameters",
            "completion_codes": [
                {
                    "code": batch.prolific_completion_code,
                    "code_type": "COMPLETED",
                    "actions": [{"action": "MANUALLY_REVIEW"}],
                }
            ],
            "total_available_places": batch.assignments_per_task,
            "estimated_completion_time": minutes,
            "maximum_allowed_time": max(
                minutes, math.ceil(tasks * batch.assignment_duration.total_seconds() / 60)
            ),
            "reward": reward_cents(batch),
            "device_compatibility": ["desktop"],
        }

    def _transition(self, batch: Batch, action: str) -> Reply:
        reply = self.api.call("POST", f"studies/{batch.prolific_study_id}/transition/", {"action": action})
        if isinstance(reply, dict) and reply.get("status"):
            batch.prolific_study_status = str(reply["status"])
            batch.save(update_fields=["prolific_study_status", "updated_at"])
        return reply

    def publish(self, batch: Batch) -> Reply:
        """Create the draft study once (its id is kept at once, so a retried publish creates no second one;
        creating is retried on rate limits only), then publish it, or START it again when paused."""
        if not self.connected:
            return None
        self.check_publishable(batch)
        if not batch.prolific_study_id:
            created = self.api.call("POST", "studies/", self.study_draft(batch), retry=Retry.RATE_LIMIT)
            if not isinstance(created, dict) or not created.get("id"):
                raise ProviderError(f"Prolific POST /studies/ answered without a study id: {created!r:.200}")
            batch.prolific_study_id = str(created["id"])
            batch.prolific_study_status = str(created.get("status") or UNPUBLISHED)
            batch.save(update_fields=["prolific_study_id", "prolific_study_status", "updated_at"])
        action = "START" if batch.prolific_study_status == PAUSED else "PUBLISH"
        if batch.prolific_study_status == ACTIVE:
            return {"status": ACTIVE}
        return self._transition(batch, action)

    def pause(self, batch: Batch) -> Reply:
        if not self.connected or not batch.prolific_study_id:
            return None
        return self._transition(batch, "PAUSE")

    def cancel(self, batch: Batch) -> Reply:
        """STOP the study; a draft that was never published has nothing to stop."""
        if not self.connected or not batch.prolific_study_id:
            return None
        if batch.prolific_study_status in (UNPUBLISHED, *STOPPED):
            return {"status": batch.prolific_study_status}
        return self._transition(batch, "STOP")

    def study_status(self, batch: Batch) -> str:
        """The study's status at Prolific now."""
        reply = self.api.call("GET", f"studies/{batch.prolific_study_id}/")
        return str(reply.get("status", "")) if isinstance(reply, dict) else ""

    def approve(self, assignment: Assignment, feedback: str) -> Reply:
        if not self.connected:
            return None
        return self.api.call(
            "POST", f"submissions/{_submission_id(assignment)}/transition/", {"action": "APPROVE"}
        )

    def approve_many(self, assignments: Sequence[Assignment], feedback: str) -> BulkApproval | None:
        """One bulk-approve call for the submissions of `assignments`, then a read of the study's
        submissions: Prolific approves in the background and says nothing per submission, so what it shows
        approved is approved, what it still shows awaiting review is pending, anything else was refused."""
        if not self.connected:
            return None
        outcome = BulkApproval()
        by_submission: dict[str, list[int]] = {}
        for assignment in assignments:
            if assignment.prolific_session_id:
                by_submission.setdefault(assignment.prolific_session_id, []).append(assignment.pk)
            else:
                outcome.refused[assignment.pk] = "it has no Prolific submission id (SESSION_ID)"
        if not by_submission:
            return outcome
        outcome.reply = self.api.call(
            "POST", "submissions/bulk-approve/", {"submission_ids": sorted(by_submission)}
        )
        study_ids = {a.prolific_study_id or a.task.batch.prolific_study_id for a in assignments}
        statuses: dict[str, str] = {}
        for study_id in sorted(s for s in study_ids if s):
            statuses.update({s["id"]: str(s.get("status", "")) for s in self.submissions(study_id)})
        for submission, pks in by_submission.items():
            status = statuses.get(submission, "")
            for pk in pks:
                if status == "APPROVED":
                    outcome.approved.add(pk)
                elif status in ("AWAITING REVIEW", "PROCESSING"):
                    outcome.pending[pk] = (
                        f"Prolific has not approved submission {submission} yet ({status}); the next sync "
                        "records it once it does"
                    )
                else:
                    outcome.refused[pk] = (
                        f"Prolific did not approve submission {submission}: it is {status or 'unknown there'}"
                    )
        return outcome

    def reject(self, assignment: Assignment, feedback: str, category: str = "") -> Reply:
        """REJECT the submission with Prolific's category and a message of at least 100 characters."""
        if not self.connected:
            return None
        if category not in REJECTION_CATEGORIES:
            raise ProviderError(
                f"Prolific needs a rejection category, one of {', '.join(REJECTION_CATEGORIES)}; "
                f"got {category!r}"
            )
        if len(feedback) < REJECT_MESSAGE_MIN:
            raise ProviderError(
                f"Prolific needs a rejection message of at least {REJECT_MESSAGE_MIN} characters that tells "
                f"the participant why; this one has {len(feedback)}"
            )
        return self.api.call(
            "POST",
            f"submissions/{_submission_id(assignment)}/transition/",
            {"action": "REJECT", "message": feedback, "rejection_category": category},
        )

    def bonus(self, assignment: Assignment, amount: Decimal, reason: str) -> Reply:
        """Pay through the assignment's BonusPayment record, written before paying (see its docstring).

        Set up (POST /submissions/bonus-payments/, which pays nothing) once; claim the record as paying and
        commit that; then pay (POST /bulk-bonus-payments/<id>/pay/, not idempotent, so tried again on a rate
        limit only). A pay call without an answer stays paying: a retry asks Prolific whether the bonus
        arrived instead of paying again. A pay call Prolific refused (4xx) goes back to set up.
        """
        if not self.connected:
            return None
        State = BonusPayment.State
        payment = BonusPayment.objects.get(assignment=assignment)
        submission = _submission_id(assignment)
        study_id = assignment.prolific_study_id or assignment.task.batch.prolific_study_id
        if payment.state == State.PAYING:
            return self._bonus_arrived(payment, submission)
        if payment.state == State.PENDING:
            setup = self.api.call(
                "POST",
                "submissions/bonus-payments/",
                {"study_id": study_id, "csv_bonuses": f"{submission},{amount:.2f}"},
            )
            if not isinstance(setup, dict) or not setup.get("id"):
                raise ProviderError(
                    f"Prolific POST /submissions/bonus-payments/ answered without an id: {setup!r:.200}"
                )
            payment.provider_ref = str(setup["id"])
            payment.state = State.SET_UP
            payment.save(update_fields=["provider_ref", "state"])
        claimed = BonusPayment.objects.filter(pk=payment.pk, state=State.SET_UP).update(state=State.PAYING)
        if not claimed:
            raise ProviderError("this bonus is being paid by another request; reload the page in a moment")
        try:
            return self.api.call(
                "POST", f"bulk-bonus-payments/{payment.provider_ref}/pay/", {}, retry=Retry.RATE_LIMIT
            )
        except ProlificError as exc:
            if not exc.ambiguous:
                BonusPayment.objects.filter(pk=payment.pk).update(state=State.SET_UP)
                raise
            raise ProviderError(
                f"{exc}. The pay call may have gone through, so it is never sent again: "
                "send the bonus again later and unitscope asks Prolific whether it arrived"
            ) from exc

    def bonus_many(self, assignments: Sequence[Assignment], amount: Decimal, reason: str) -> BulkBonus | None:
        """One bonus set-up (a line per submission) and one pay call for many assignments of one study.

        A submission appears once in a set-up, so a participant's second answer goes in the next round. The
        records move pending → paying in one locked step after the set-up and before the pay call, and only
        when every one of the round is still pending (else another request is paying some: nothing is paid).
        A refused pay call puts the round back to pending; one without an answer leaves it paying, so a
        later bonus of each asks Prolific whether it arrived, and stops the rounds after it.
        """
        if not self.connected:
            return None
        outcome = BulkBonus()
        waiting: list[Assignment] = []
        for assignment in assignments:
            if assignment.prolific_session_id:
                waiting.append(assignment)
            else:
                outcome.refused[assignment.pk] = "it has no Prolific submission id (SESSION_ID)"
        while waiting:
            sessions: set[str] = set()
            round_: list[Assignment] = []
            later: list[Assignment] = []
            for assignment in waiting:
                target = later if assignment.prolific_session_id in sessions else round_
                target.append(assignment)
                sessions.add(assignment.prolific_session_id)
            waiting = later
            try:
                reply = self._bonus_round(round_, amount)
            except ProviderError as exc:
                for assignment in (*round_, *waiting):
                    outcome.refused[assignment.pk] = str(exc)
                return outcome
            outcome.paid.update((a.pk, reply) for a in round_)
        return outcome

    def _bonus_round(self, assignments: list[Assignment], amount: Decimal) -> Reply:
        State = BonusPayment.State
        study_id = assignments[0].task.batch.prolific_study_id
        lines = "\n".join(f"{a.prolific_session_id},{amount:.2f}" for a in assignments)
        setup = self.api.call(
            "POST", "submissions/bonus-payments/", {"study_id": study_id, "csv_bonuses": lines}
        )
        if not isinstance(setup, dict) or not setup.get("id"):
            raise ProviderError(
                f"Prolific POST /submissions/bonus-payments/ answered without an id: {setup!r:.200}"
            )
        ref = str(setup["id"])
        records = BonusPayment.objects.filter(assignment__in=assignments)
        with transaction.atomic():
            pending = list(records.select_for_update().filter(state=State.PENDING))
            if len(pending) != len(assignments):
                raise ProviderError(
                    "some of these bonuses are being paid by another request; nothing was paid, reload the "
                    "page in a moment"
                )
            records.update(state=State.PAYING, provider_ref=ref)
        try:
            return self.api.call("POST", f"bulk-bonus-payments/{ref}/pay/", {}, retry=Retry.RATE_LIMIT)
        except ProlificError as exc:
            if not exc.ambiguous:
                records.update(state=State.PENDING, provider_ref="")
                raise
            raise ProviderError(
                f"{exc}. The pay call may have gone through, so it is never sent again: send each bonus "
                "again later and unitscope asks Prolific whether it arrived"
            ) from exc

    def _bonus_arrived(self, payment: BonusPayment, submission: str) -> Reply:
        """After a pay call without an answer: whether Prolific lists the bonus on the submission (in cents,
        counting the bonuses of the same amount already recorded for the participant's other answers)."""
        found = self.api.call("GET", f"submissions/{submission}/")
        paid = found.get("bonus_payments", []) if isinstance(found, dict) else []
        cents = int((payment.amount * 100).to_integral_value())
        recorded = BonusPayment.objects.filter(
            assignment__prolific_session_id=submission, state=BonusPayment.State.PAID, amount=payment.amount
        ).count()
        if sum(1 for value in paid if _cents(value) == cents) > recorded:
            return {"bonus_payments": paid, "confirmed": payment.provider_ref}
        raise ProviderError(
            f"Prolific GET /submissions/{submission}/ does not list the bonus of {payment.amount} (bulk "
            f"bonus {payment.provider_ref}) yet. Its pay call was sent without an answer and is never "
            "sent twice; Prolific pays in the background, so try again in a few minutes"
        )

    def block(self, worker: CrowdWorker, reason: str) -> Reply:
        if not self.connected:
            return None
        return self.api.call(
            "POST",
            f"participant-groups/{_blocklist()}/participants/",
            {"participant_ids": [worker.external_id]},
        )

    def unblock(self, worker: CrowdWorker) -> Reply:
        if not self.connected:
            return None
        return self.api.call(
            "DELETE",
            f"participant-groups/{_blocklist()}/participants/",
            {"participant_ids": [worker.external_id]},
        )

    def group_add(self, group_id: str, participant_ids: Sequence[str]) -> Reply:
        """Add participants to a participant group (adding a member again changes nothing)."""
        return self.api.call(
            "POST", f"participant-groups/{group_id}/participants/", {"participant_ids": list(participant_ids)}
        )

    def submissions(self, study_id: str) -> list[dict[str, Any]]:
        """Every submission of the study, page by page."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            reply = self.api.call(
                "GET", "submissions/", query={"study": study_id, "page": page, "page_size": 100}
            )
            results = reply.get("results", []) if isinstance(reply, dict) else []
            found.extend(results)
            links = reply.get("_links", {}) if isinstance(reply, dict) else {}
            following = (links.get("next") or {}).get("href") if isinstance(links, dict) else None
            if not results or not following:
                return found
            page += 1

    def remote_assignments(self, batch: Batch) -> Iterator[RemoteAssignment]:
        """One record per submission: `external_id` is the submission id (SESSION_ID), which every
        assignment of the participant's session carries."""
        if not self.connected or not batch.prolific_study_id:
            return
        for submission in self.submissions(batch.prolific_study_id):
            yield RemoteAssignment(
                external_id=str(submission["id"]),
                status=remote_status(str(submission.get("status", ""))),
                worker_id=str(submission.get("participant_id", "")),
                hit_id=batch.prolific_study_id,
            )


def _blocklist() -> str:
    group = settings.PROLIFIC_BLOCKLIST_GROUP_ID
    if not group:
        raise ProviderError(
            "Prolific blocks through a participant group: set PROLIFIC_BLOCKLIST_GROUP_ID to the id of your "
            "blocklist group"
        )
    return group


def _cents(value: Any) -> int | None:
    """A bonus as Prolific lists it on a submission (cents, or an object with an amount in cents)."""
    if isinstance(value, dict):
        value = value.get("amount")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
