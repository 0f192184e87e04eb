"""Taking, returning and answering tasks: a crowd worker's side of the flow.

Concurrency rules: a worker takes a task by locking the task row and picking the lowest free slot below
the batch's assignments_per_task; the partial unique constraint on (task, slot) makes a racer that slipped
past the lock (SQLite has no row locks) fail with IntegrityError, and the service retries. Submitting locks
the assignment row and returns the stored annotation on a replay, so a double submit stores one answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from agreement import categories
from agreement.gold import gold_matches
from annotate import selectors
from annotate.errors import (
    AlreadyDone,
    AssignmentClosed,
    AssignmentExpired,
    BatchClosed,
    InvalidAnswer,
    TaskFull,
    WorkerBlocked,
    WrongProvider,
)
from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Task
from annotate.providers import ProviderError, get_provider
from annotate.services.crowd_workers import crowd_worker_block

log = logging.getLogger(__name__)
Status = Assignment.Status

WORDS_MAX = 40
ACCEPT_ATTEMPTS = 5
AUTO_REJECT_FEEDBACK = "Automatic: the answer did not match a control unit whose answer is known."


def assignment_expire_overdue(*, now: datetime | None = None, task: Task | None = None) -> int:
    """Mark accepted assignments past their deadline expired, freeing their slots; returns how many.

    Called lazily whenever a slot is taken or an answer arrives, and periodically by
    `manage.py expire_assignments` (or a Celery beat task).
    """
    overdue = Assignment.objects.filter(status=Status.ACCEPTED, deadline__lte=now or timezone.now())
    if task is not None:
        overdue = overdue.filter(task=task)
    return overdue.update(status=Status.EXPIRED, slot=None)


def _check_accepting(batch: Batch, now: datetime) -> None:
    if batch.state != Batch.State.PUBLISHED:
        raise BatchClosed(f"This batch is {batch.get_state_display().lower()} and takes no new work.")
    if batch.expires_at is not None and batch.expires_at <= now:
        raise BatchClosed("This batch has expired and takes no new work.")


def _free_slot(task: Task, preempt_unsubmitted: bool) -> int:
    """The lowest slot below assignments_per_task no live assignment holds.

    With an outside provider that hands out slots itself (MTurk), a new assignment for a full task means
    one of our unsubmitted holders was returned or abandoned there, so the oldest one gives up its slot.
    """
    used = set(Assignment.objects.filter(task=task, slot__isnull=False).values_list("slot", flat=True))
    for slot in range(task.batch.assignments_per_task):
        if slot not in used:
            return slot
    if preempt_unsubmitted:
        stale = Assignment.objects.filter(task=task, status=Status.ACCEPTED).order_by("accepted_at").first()
        if stale is not None:
            stale_slot = stale.slot
            assert stale_slot is not None  # an accepted assignment holds a slot (assignment_live_holds_slot)
            Assignment.objects.filter(pk=stale.pk).update(status=Status.RETURNED, slot=None)
            return stale_slot
    raise TaskFull("All places on this task are taken; please pick another task.")


def _accept_once(task_id: int, worker_id: int, now: datetime, provider_ids: dict[str, str]) -> Assignment:
    task = Task.objects.select_for_update(of=("self",)).select_related("batch").get(pk=task_id)
    worker = CrowdWorker.objects.get(pk=worker_id)
    assignment_expire_overdue(now=now, task=task)
    existing = Assignment.objects.filter(task=task, worker=worker).first()
    if existing is not None and existing.status == Status.ACCEPTED:
        # A reload (also while the batch is paused) gets the worker's own assignment back.
        changed = {k: v for k, v in provider_ids.items() if v and getattr(existing, k) != v}
        if changed:
            for key, value in changed.items():
                setattr(existing, key, value)
            existing.save(update_fields=list(changed))
        return existing
    _check_accepting(task.batch, now)
    if worker.blocked:
        raise WorkerBlocked("Your worker account may no longer take tasks from this requester.")
    if worker.provider != task.batch.provider:
        raise WrongProvider(
            f"This task is offered through {task.batch.get_provider_display()}; open it from there."
        )
    if existing is not None and existing.status not in (Status.RETURNED, Status.EXPIRED):
        raise AlreadyDone("You have already done this task.")
    provider = get_provider(task.batch.provider)
    assignment = existing or Assignment(task=task, worker=worker)
    assignment.slot = _free_slot(task, preempt_unsubmitted=provider.external_slots)
    assignment.status = Status.ACCEPTED
    assignment.accepted_at = now
    assignment.deadline = now + task.batch.assignment_duration
    for key, value in provider_ids.items():
        setattr(assignment, key, value)
    assignment.save()
    return assignment


def assignment_accept(
    *, task: Task, worker: CrowdWorker, now: datetime | None = None, **provider_ids: str
) -> Assignment:
    """Give `worker` a slot on `task` (or their accepted assignment again); TaskFull when none is free.

    `provider_ids` are Assignment fields such as mturk_assignment_id, turk_submit_to, prolific_session_id.
    """
    now = now or timezone.now()
    for attempt in range(ACCEPT_ATTEMPTS):
        try:
            with transaction.atomic():
                return _accept_once(task.pk, worker.pk, now, provider_ids)
        except IntegrityError:
            log.info("slot race on task %s (attempt %d), retrying", task.pk, attempt + 1)
    raise TaskFull("This task is in high demand right now; please try again or pick another task.")


def assignment_return(*, assignment: Assignment) -> Assignment:
    """The worker gives the task back unanswered; the slot goes to someone else."""
    with transaction.atomic():
        locked = Assignment.objects.select_for_update().get(pk=assignment.pk)
        if locked.status != Status.ACCEPTED:
            raise AssignmentClosed(f"This assignment is already {locked.get_status_display().lower()}.")
        locked.status = Status.RETURNED
        locked.slot = None
        locked.save(update_fields=["status", "slot"])
    return locked


def _clean_answer(
    words: str, category: str, rejected_ranks: Iterable[int], shown: Sequence[int]
) -> tuple[str, str, list[int]]:
    words = " ".join(words.split())
    if not words:
        raise InvalidAnswer("Words: write one or two words that describe the concept.")
    if len(words) > WORDS_MAX:
        raise InvalidAnswer(f"Words: at most {WORDS_MAX} characters (you wrote {len(words)}).")
    if category not in categories.CODES:
        raise InvalidAnswer(f"Category: {category!r} is not one of {', '.join(categories.CODES)}.")
    ranks = sorted(set(rejected_ranks))
    outside = [rank for rank in ranks if rank not in set(shown)]
    if outside:
        raise InvalidAnswer(f"Images: rank {outside[0]} is not one of the images shown.")
    return words, category, ranks


@dataclass
class SubmitOutcome:
    annotation: Annotation
    replay: bool
    block_reason: str = ""


def _submit_once(
    assignment_id: int,
    words: str,
    category: str,
    rejected_ranks: Iterable[int],
    verify_answer: bool | None,
    now: datetime,
) -> SubmitOutcome:
    assignment = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("task__batch", "task__unit", "worker")
        .get(pk=assignment_id)
    )
    stored = Annotation.objects.filter(assignment=assignment).first()
    if stored is not None:
        return SubmitOutcome(stored, replay=True)
    task, batch, worker = assignment.task, assignment.task.batch, assignment.worker
    if assignment.status == Status.EXPIRED:
        raise AssignmentExpired("The time for this task ran out, so the answer was not stored.")
    if assignment.status != Status.ACCEPTED:
        raise AssignmentClosed(
            f"This assignment is {assignment.get_status_display().lower()}; the answer was not stored."
        )
    if batch.state not in (Batch.State.PUBLISHED, Batch.State.PAUSED):
        raise BatchClosed(f"This batch is {batch.get_state_display().lower()}; the answer was not stored.")
    if worker.blocked:
        raise WorkerBlocked("Your worker account may no longer submit work to this requester.")
    shown = selectors.task_image_ranks(task=task)
    ranks: list[int]
    if task.kind == Task.Kind.VERIFY:
        if verify_answer is None:
            raise InvalidAnswer("Answer: say whether the label fits the images.")
        clean_words, clean_category, ranks = "", "", []
    else:
        clean_words, clean_category, ranks = _clean_answer(words, category, rejected_ranks, shown)
    annotation = Annotation.objects.create(
        assignment=assignment,
        words=clean_words,
        category=clean_category,
        rejected_ranks=ranks,
        shown_count=len(shown),
        precision=(len(shown) - len(ranks)) / len(shown) if shown else None,
        time_spent_ms=max(0, int((now - assignment.accepted_at).total_seconds() * 1000)),
        verify_answer=verify_answer if task.kind == Task.Kind.VERIFY else None,
    )
    assignment.status = Status.SUBMITTED
    assignment.submitted_at = now
    block_reason = ""
    if task.is_gold and task.kind == Task.Kind.LABEL:
        passed = gold_matches(
            words=clean_words,
            category=clean_category,
            gold_category=task.gold_category,
            gold_words=task.gold_words,
        )
        assignment.gold_passed = passed
        CrowdWorker.objects.filter(pk=worker.pk).update(
            gold_total=F("gold_total") + 1, gold_correct=F("gold_correct") + int(passed)
        )
        worker.refresh_from_db(fields=["gold_total", "gold_correct"])
        if not passed and batch.auto_reject_failed_gold:
            # MTurk learns of the submission only after our page posts to it, so `batch_sync` pushes this
            # rejection there; local and Prolific have nothing to call.
            assignment.status = Status.REJECTED
            assignment.slot = None
            assignment.feedback = AUTO_REJECT_FEEDBACK
            assignment.reviewed_at = now
        threshold = batch.block_below_accuracy
        accuracy = worker.gold_accuracy
        if (
            threshold is not None
            and accuracy is not None
            and worker.gold_total >= batch.block_min_gold
            and accuracy < threshold
        ):
            block_reason = (
                f"Automatic: accuracy on control units {accuracy:.0%} is below the batch's "
                f"threshold of {threshold:.0%}."
            )
    assignment.save()
    return SubmitOutcome(annotation, replay=False, block_reason=block_reason)


def annotation_submit(
    *,
    assignment: Assignment,
    words: str = "",
    category: str = "",
    rejected_ranks: Iterable[int] = (),
    verify_answer: bool | None = None,
    now: datetime | None = None,
) -> SubmitOutcome:
    """Store the worker's answer once; a replay returns the stored annotation and stores nothing.

    Nothing is stored when the answer is invalid, the assignment expired, was returned or belongs to a
    closed batch, or the worker is blocked. Gold units update the worker's accuracy, may auto-reject the
    assignment and may block the worker (after the answer is safely stored).
    """
    now = now or timezone.now()
    assignment_expire_overdue(now=now, task=assignment.task)
    try:
        with transaction.atomic():
            outcome = _submit_once(assignment.pk, words, category, rejected_ranks, verify_answer, now)
    except IntegrityError:
        stored = Annotation.objects.filter(assignment_id=assignment.pk).first()
        if stored is None:
            raise
        return SubmitOutcome(stored, replay=True)
    if outcome.block_reason:
        worker = CrowdWorker.objects.get(pk=assignment.worker_id)
        try:
            crowd_worker_block(worker=worker, reason=outcome.block_reason)
        except ProviderError:
            log.exception("could not block worker %s at the provider; blocked here only", worker)
            CrowdWorker.objects.filter(pk=worker.pk).update(blocked=True, blocked_reason=outcome.block_reason)
    return outcome
