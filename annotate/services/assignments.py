"""Taking, returning and answering tasks: a crowd worker's side of the flow.

Concurrency rules: a worker takes a task by locking the task row and picking the lowest free slot below
the batch's assignments_per_task; the partial unique constraint on (task, slot) makes a racer that slipped
past the lock (SQLite has no row locks) fail with IntegrityError, and the service retries. Submitting locks
the assignment row and returns the stored annotation on a replay, so a double submit stores one answer.

Unverified assignments (MTurk: the ids on the task page's URL can be typed by anyone) hold an overflow slot,
at or above assignments_per_task: the database still sees a live assignment with a slot, but the real slots
below assignments_per_task go to verified assignments only, so no unverified arrival ever takes or frees
one. Nothing is preempted: MTurk itself limits its workers to MaxAssignments, and an abandoned unverified
assignment simply expires at its deadline. When MTurk confirms an assignment (`assignment_verify`) it moves
into a free real slot (it keeps its overflow slot when MTurk handed out more than we count, e.g. after a
rejection), and only then do its answer count, its gold answer score and its worker risk a block.
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
from agreement.words import MAX_WORDS, answer_words
from annotate import selectors
from annotate.errors import (
    AlreadyDone,
    AssignmentClosed,
    AssignmentExpired,
    BatchClosed,
    InvalidAnswer,
    QualificationRequired,
    TaskFull,
    WorkerBlocked,
    WrongProvider,
)
from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Task
from annotate.providers import ProviderError, RemoteAssignment, get_provider
from annotate.selectors.qualifications import qualification_refusal
from annotate.services.comparison import comparison_inputs_changed
from annotate.services.crowd_workers import crowd_worker_block

log = logging.getLogger(__name__)
Status = Assignment.Status

WORDS_MAX = 40
ACCEPT_ATTEMPTS = 5
SLOT_MAX = 32767
"""The largest slot number the database stores (a small integer): the last overflow slot."""
_MTURK_IDS = ("mturk_assignment_id", "mturk_hit_id", "turk_submit_to")
"""Provider ids a reload never rewrites: an assignment keeps the MTurk assignment it was opened for."""
_CONFIRMED = (RemoteAssignment.SUBMITTED, RemoteAssignment.APPROVED, RemoteAssignment.REJECTED)
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


def _lowest_free(task: Task, slots: range) -> int | None:
    used = set(Assignment.objects.filter(task=task, slot__isnull=False).values_list("slot", flat=True))
    return next((slot for slot in slots if slot not in used), None)


def _free_slot(task: Task, *, verified: bool) -> int:
    """The lowest slot no live assignment holds: a real one (below assignments_per_task) for a verified
    assignment, an overflow one (at or above it) for an unverified one, which thus never pushes anyone out.
    """
    per_task = task.batch.assignments_per_task
    slot = _lowest_free(task, range(per_task) if verified else range(per_task, SLOT_MAX + 1))
    if slot is None:
        raise TaskFull("All places on this task are taken; please pick another task.")
    return slot


def _accept_once(task_id: int, worker_id: int, now: datetime, provider_ids: dict[str, str]) -> Assignment:
    task = Task.objects.select_for_update(of=("self",)).select_related("batch").get(pk=task_id)
    worker = CrowdWorker.objects.get(pk=worker_id)
    assignment_expire_overdue(now=now, task=task)
    existing = Assignment.objects.filter(task=task, worker=worker).first()
    if existing is not None and existing.status == Status.ACCEPTED:
        # A reload (also while the batch is paused) gets the worker's own assignment back, but never under
        # another MTurk assignment id: that would hand someone typing a worker's id that worker's task.
        wanted = provider_ids.get("mturk_assignment_id", "")
        if wanted and wanted != existing.mturk_assignment_id:
            raise AlreadyDone(
                "You already have this task open under another MTurk assignment; finish that one or wait "
                "until it expires."
            )
        changed = {
            k: v for k, v in provider_ids.items() if v and k not in _MTURK_IDS and getattr(existing, k) != v
        }
        if changed:
            for key, value in changed.items():
                setattr(existing, key, value)
            existing.save(update_fields=list(changed))
        return existing
    _check_accepting(task.batch, now)
    if worker.blocked:
        raise WorkerBlocked("Your worker account may no longer take tasks from this requester.")
    refusal = qualification_refusal(batch=task.batch, worker=worker)
    if refusal:
        raise QualificationRequired(refusal)
    if worker.provider != task.batch.provider:
        raise WrongProvider(
            f"This task is offered through {task.batch.get_provider_display()}; open it from there."
        )
    if existing is not None and existing.status not in (Status.RETURNED, Status.EXPIRED):
        raise AlreadyDone("You have already done this task.")
    provider = get_provider(task.batch.provider)
    assignment = existing or Assignment(task=task, worker=worker)
    assignment.verified = not provider.confirms_later
    assignment.slot = _free_slot(task, verified=assignment.verified)
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
    An assignment of a provider that confirms later (MTurk) starts unverified, in an overflow slot.
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


def answer_words_clean(words: str) -> str:
    """`words` with its spaces collapsed, or InvalidAnswer: the protocol's one or two words, counted as
    the statistics and gold matching count them (`agreement.words.answer_words`), in WORDS_MAX characters.
    """
    words = " ".join(words.split())
    count = len(answer_words(words, max_words=None))
    if not count:
        raise InvalidAnswer("Words: write one or two words that describe the concept.")
    if len(words) > WORDS_MAX:
        raise InvalidAnswer(f"Words: at most {WORDS_MAX} characters (you wrote {len(words)}).")
    if count > MAX_WORDS:
        raise InvalidAnswer(f"Words: write one or two words (you wrote {count}).")
    return words


def _clean_answer(
    words: str, category: str, rejected_ranks: Iterable[int], shown: Sequence[int]
) -> tuple[str, str, list[int]]:
    words = answer_words_clean(words)
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


def assignment_lock_for_answer(*, assignment_id: int) -> tuple[Assignment, Annotation | None]:
    """Lock the assignment (inside the caller's transaction) and return it with its stored answer, if any (a
    replay); without one, refuse an assignment that may not take an answer now: expired, closed, in a batch
    that is not open, or of a blocked crowd worker."""
    assignment = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("task__batch", "task__unit", "worker")
        .get(pk=assignment_id)
    )
    stored = Annotation.objects.filter(assignment=assignment).first()
    if stored is not None:
        return assignment, stored
    batch, worker = assignment.task.batch, assignment.worker
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
    return assignment, None


def _submit_once(
    assignment_id: int,
    words: str,
    category: str,
    rejected_ranks: Iterable[int],
    verify_answer: bool | None,
    now: datetime,
) -> SubmitOutcome:
    assignment, stored = assignment_lock_for_answer(assignment_id=assignment_id)
    if stored is not None:
        return SubmitOutcome(stored, replay=True)
    task = assignment.task
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
    if assignment.verified:
        block_reason = _score_gold(assignment, annotation, now)
    assignment.save()
    comparison_inputs_changed(unit_ids=[task.unit_id])
    return SubmitOutcome(annotation, replay=False, block_reason=block_reason)


def _score_gold(assignment: Assignment, annotation: Annotation, now: datetime) -> str:
    """Score a verified answer to a gold label task once (gold_passed stays None until then): the worker's
    gold counters, auto-rejection of a submitted answer, and the reason to block them ("" for none)."""
    task, batch = assignment.task, assignment.task.batch
    if not task.is_gold or task.kind == Task.Kind.VERIFY or assignment.gold_passed is not None:
        return ""
    if task.kind == Task.Kind.TWOAFC:  # a 2AFC catch trial: the obvious pair
        passed = bool(annotation.correct)
    else:
        passed = gold_matches(
            words=annotation.words,
            category=annotation.category,
            gold_category=task.gold_category,
            gold_words=task.gold_words,
        )
    assignment.gold_passed = passed
    CrowdWorker.objects.filter(pk=assignment.worker_id).update(
        gold_total=F("gold_total") + 1, gold_correct=F("gold_correct") + int(passed)
    )
    worker = CrowdWorker.objects.get(pk=assignment.worker_id)
    if not passed and batch.auto_reject_failed_gold and assignment.status == Status.SUBMITTED:
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
        return (
            f"Automatic: accuracy on control units {accuracy:.0%} is below the batch's "
            f"threshold of {threshold:.0%}."
        )
    return ""


def _block(worker_id: int, reason: str, batch: Batch) -> None:
    """Block after the answer is safely stored, by `batch`'s rule; a provider failure blocks here only."""
    worker = CrowdWorker.objects.get(pk=worker_id)
    try:
        crowd_worker_block(worker=worker, reason=reason, batch=batch)
    except ProviderError:
        log.exception("could not block worker %s at the provider; blocked here only", worker)
        CrowdWorker.objects.filter(pk=worker.pk).update(blocked=True, blocked_reason=reason)


def _matches(assignment: Assignment, task: Task, remote: RemoteAssignment) -> bool:
    """Whether the provider's record names this very assignment, its worker and its task's HIT."""
    return (
        bool(assignment.mturk_assignment_id)
        and remote.external_id == assignment.mturk_assignment_id
        and bool(remote.worker_id)
        and remote.worker_id == assignment.worker.external_id
        and bool(remote.hit_id)
        and remote.hit_id == task.mturk_hit_id
        and assignment.mturk_hit_id in ("", remote.hit_id)
        and remote.status in _CONFIRMED
    )


def assignment_verify(
    *, assignment: Assignment, remote: RemoteAssignment, now: datetime | None = None
) -> bool:
    """Count an unverified assignment once the provider's record `remote` of it names the same assignment,
    worker and HIT: it moves into a free real slot, and its gold answer is scored now (which may auto-reject
    it and block its worker). True when it is verified (now or before); False, nothing changed, when the
    record does not match."""
    now = now or timezone.now()
    with transaction.atomic():
        task = Task.objects.select_for_update(of=("self",)).select_related("batch").get(pk=assignment.task_id)
        locked = (
            Assignment.objects.select_for_update(of=("self",))
            .select_related("task__batch", "worker")
            .get(pk=assignment.pk)
        )
        if locked.verified:
            return True
        if not _matches(locked, task, remote):
            log.warning("%s's record %s does not match assignment %s", task.batch.provider, remote, locked.pk)
            return False
        locked.verified = True
        if locked.slot is not None and locked.slot >= task.batch.assignments_per_task:
            real = _lowest_free(task, range(task.batch.assignments_per_task))
            locked.slot = locked.slot if real is None else real
        block_reason = ""
        annotation = Annotation.objects.filter(assignment=locked).first()
        if annotation is not None and locked.status in (Status.SUBMITTED, Status.APPROVED):
            block_reason = _score_gold(locked, annotation, now)
        locked.save()
        comparison_inputs_changed(unit_ids=[task.unit_id])
    if block_reason:
        _block(locked.worker_id, block_reason, task.batch)
    return True


def _verify_at_provider(assignment_id: int) -> None:
    """Ask the provider whether it confirms an unverified assignment (MTurk: GetAssignment)."""
    assignment = Assignment.objects.select_related("task__batch", "worker").get(pk=assignment_id)
    if assignment.verified:
        return
    remote = get_provider(assignment.task.batch.provider).remote_assignment(assignment)
    if remote is not None:
        assignment_verify(assignment=assignment, remote=remote)


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
    assignment and may block the worker (after the answer is safely stored); for an unverified assignment
    that happens only once the provider confirms it, which is asked here and by `batch_sync`.
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
        outcome = SubmitOutcome(stored, replay=True)
    if outcome.block_reason:
        _block(assignment.worker_id, outcome.block_reason, assignment.task.batch)
    _verify_at_provider(assignment.pk)
    return outcome
