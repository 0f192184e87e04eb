"""Every write of the annotation service (HackSoft style: keyword-only `<entity>_<action>`, atomic).

Concurrency rules: a worker takes a task by locking the task row and picking the lowest free slot below
the batch's assignments_per_task; the partial unique constraint on (task, slot) makes a racer that slipped
past the lock (SQLite has no row locks) fail with IntegrityError, and the service retries. Submitting locks
the assignment row and returns the stored annotation on a replay, so a double submit stores one answer.
"""
from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from annotate import categories, selectors
from annotate.errors import (AlreadyDone, AssignmentClosed, AssignmentExpired, BatchClosed, ImportUnitsError,
                             InvalidAnswer, ReviewError, TaskFull, WorkerBlocked, WrongProvider)
from annotate.gold import gold_matches
from annotate.models import (Annotation, Assignment, Batch, DissectionRun, Provider, Task, Unit, UnitImage,
                             Worker)
from annotate.providers import ProviderError, SyncResult, get_provider

log = logging.getLogger(__name__)

WORDS_MAX = 40
ACCEPT_ATTEMPTS = 5
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
UNIT_META = "unit.json"
AUTO_REJECT_FEEDBACK = "Automatic: the answer did not match a control unit whose answer is known."
Status = Assignment.Status


# --- workers and assignments -------------------------------------------------------------------------------

def worker_get_or_create(*, provider: str, external_id: str) -> Worker:
    """The worker `external_id` of `provider`, created on first sight (safe under concurrent first visits)."""
    external_id = external_id.strip()
    if not external_id:
        raise InvalidAnswer("A worker id is required.")
    if len(external_id) > 200:
        raise InvalidAnswer("A worker id has at most 200 characters.")
    try:
        with transaction.atomic():
            worker, _ = Worker.objects.get_or_create(provider=provider, external_id=external_id)
    except IntegrityError:
        worker = Worker.objects.get(provider=provider, external_id=external_id)
    return worker


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
            slot = stale.slot
            Assignment.objects.filter(pk=stale.pk).update(status=Status.RETURNED, slot=None)
            return slot
    raise TaskFull("All places on this task are taken; please pick another task.")


def _accept_once(task_id: int, worker_id: int, now: datetime, provider_ids: dict[str, str]) -> Assignment:
    task = Task.objects.select_for_update(of=("self",)).select_related("batch").get(pk=task_id)
    worker = Worker.objects.get(pk=worker_id)
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
        raise WrongProvider(f"This task is offered through {task.batch.get_provider_display()}; "
                            "open it from there.")
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


def assignment_accept(*, task: Task, worker: Worker, now: datetime | None = None,
                      **provider_ids: str) -> Assignment:
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


def _clean_answer(words: str, category: str, rejected_ranks: Iterable[int], shown: Sequence[int]
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


def _submit_once(assignment_id: int, words: str, category: str, rejected_ranks: Iterable[int],
                 verify_answer: bool | None, now: datetime) -> SubmitOutcome:
    assignment = (Assignment.objects.select_for_update(of=("self",))
                  .select_related("task__batch", "task__unit", "worker").get(pk=assignment_id))
    stored = Annotation.objects.filter(assignment=assignment).first()
    if stored is not None:
        return SubmitOutcome(stored, replay=True)
    task, batch, worker = assignment.task, assignment.task.batch, assignment.worker
    if assignment.status == Status.EXPIRED:
        raise AssignmentExpired("The time for this task ran out, so the answer was not stored.")
    if assignment.status != Status.ACCEPTED:
        raise AssignmentClosed(f"This assignment is {assignment.get_status_display().lower()}; "
                               "the answer was not stored.")
    if batch.state not in (Batch.State.PUBLISHED, Batch.State.PAUSED):
        raise BatchClosed(f"This batch is {batch.get_state_display().lower()}; the answer was not stored.")
    if worker.blocked:
        raise WorkerBlocked("Your worker account may no longer submit work to this requester.")
    shown = selectors.task_image_ranks(task=task)
    if task.kind == Task.Kind.VERIFY:
        if verify_answer is None:
            raise InvalidAnswer("Answer: say whether the label fits the images.")
        clean_words, clean_category, ranks = "", "", []
    else:
        clean_words, clean_category, ranks = _clean_answer(words, category, rejected_ranks, shown)
    annotation = Annotation.objects.create(
        assignment=assignment, words=clean_words, category=clean_category, rejected_ranks=ranks,
        shown_count=len(shown), precision=(len(shown) - len(ranks)) / len(shown) if shown else None,
        time_spent_ms=max(0, int((now - assignment.accepted_at).total_seconds() * 1000)),
        verify_answer=verify_answer if task.kind == Task.Kind.VERIFY else None,
    )
    assignment.status = Status.SUBMITTED
    assignment.submitted_at = now
    block_reason = ""
    if task.is_gold and task.kind == Task.Kind.LABEL:
        passed = gold_matches(words=clean_words, category=clean_category, gold_category=task.gold_category,
                              gold_words=task.gold_words)
        assignment.gold_passed = passed
        Worker.objects.filter(pk=worker.pk).update(gold_total=F("gold_total") + 1,
                                                   gold_correct=F("gold_correct") + int(passed))
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
        if (threshold is not None and accuracy is not None and worker.gold_total >= batch.block_min_gold
                and accuracy < threshold):
            block_reason = (f"Automatic: accuracy on control units {accuracy:.0%} is below the batch's "
                            f"threshold of {threshold:.0%}.")
    assignment.save()
    return SubmitOutcome(annotation, replay=False, block_reason=block_reason)


def annotation_submit(*, assignment: Assignment, words: str = "", category: str = "",
                      rejected_ranks: Iterable[int] = (), verify_answer: bool | None = None,
                      now: datetime | None = None) -> SubmitOutcome:
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
        worker = Worker.objects.get(pk=assignment.worker_id)
        try:
            worker_block(worker=worker, reason=outcome.block_reason)
        except ProviderError:
            log.exception("could not block worker %s at the provider; blocked here only", worker)
            Worker.objects.filter(pk=worker.pk).update(blocked=True, blocked_reason=outcome.block_reason)
    return outcome


# --- requester review --------------------------------------------------------------------------------------

def _lock_for_review(assignment: Assignment) -> Assignment:
    return (Assignment.objects.select_for_update(of=("self",)).select_related("task__batch", "worker")
            .get(pk=assignment.pk))


def batch_refresh_state(*, batch: Batch) -> Batch:
    """A published batch whose every slot holds an approved answer is finished."""
    if batch.state == Batch.State.PUBLISHED and selectors.batch_is_complete(batch=batch):
        batch.state = Batch.State.FINISHED
        batch.save(update_fields=["state", "updated_at"])
    return batch


def assignment_approve(*, assignment: Assignment, feedback: str = "", now: datetime | None = None) -> Assignment:
    """Approve a submitted answer here and at the provider (which pays the worker)."""
    with transaction.atomic():
        locked = _lock_for_review(assignment)
        if locked.status != Status.SUBMITTED:
            raise ReviewError(f"Only submitted assignments can be approved; this one is "
                              f"{locked.get_status_display().lower()}.")
        get_provider(locked.task.batch.provider).approve(locked, feedback.strip())
        locked.status = Status.APPROVED
        locked.feedback = feedback.strip()
        locked.reviewed_at = now or timezone.now()
        locked.save(update_fields=["status", "feedback", "reviewed_at"])
        batch_refresh_state(batch=locked.task.batch)
    return locked


def assignment_reject(*, assignment: Assignment, feedback: str, now: datetime | None = None) -> Assignment:
    """Reject a submitted answer (feedback required); its slot goes back so the unit still gets answers."""
    feedback = feedback.strip()
    if not feedback:
        raise ReviewError("Rejecting needs feedback that tells the worker why.")
    with transaction.atomic():
        locked = _lock_for_review(assignment)
        if locked.status != Status.SUBMITTED:
            raise ReviewError(f"Only submitted assignments can be rejected; this one is "
                              f"{locked.get_status_display().lower()}.")
        get_provider(locked.task.batch.provider).reject(locked, feedback)
        locked.status = Status.REJECTED
        locked.slot = None
        locked.feedback = feedback
        locked.reviewed_at = now or timezone.now()
        locked.save(update_fields=["status", "slot", "feedback", "reviewed_at"])
    return locked


def assignment_send_bonus(*, assignment: Assignment, amount: Decimal, reason: str) -> Assignment:
    """Pay `amount` on top of the reward for a submitted or approved assignment."""
    reason = reason.strip()
    if amount <= 0:
        raise ReviewError("A bonus must be more than 0.00.")
    if not reason:
        raise ReviewError("A bonus needs a reason the worker will see.")
    with transaction.atomic():
        locked = _lock_for_review(assignment)
        if locked.status not in (Status.SUBMITTED, Status.APPROVED):
            raise ReviewError("Only submitted or approved assignments can get a bonus.")
        if locked.bonus > 0:
            raise ReviewError("This assignment already got a bonus.")
        get_provider(locked.task.batch.provider).bonus(locked, amount, reason)
        locked.bonus = amount
        locked.save(update_fields=["bonus"])
    return locked


@dataclass
class ReviewOutcome:
    done: int = 0
    errors: list[str] = field(default_factory=list)


def assignments_review(*, assignments: Iterable[Assignment], action: str, feedback: str = "",
                       amount: Decimal | None = None) -> ReviewOutcome:
    """Approve, reject or bonus many assignments; each is its own transaction, failures are listed."""
    if action == "reject" and not feedback.strip():
        raise ReviewError("Rejecting needs feedback that tells the worker why.")
    if action == "bonus" and (amount is None or amount <= 0):
        raise ReviewError("A bonus must be more than 0.00.")
    outcome = ReviewOutcome()
    for assignment in assignments:
        try:
            if action == "approve":
                assignment_approve(assignment=assignment, feedback=feedback)
            elif action == "reject":
                assignment_reject(assignment=assignment, feedback=feedback)
            elif action == "bonus":
                assignment_send_bonus(assignment=assignment, amount=amount or Decimal(0), reason=feedback)
            else:
                raise ReviewError(f"Unknown review action {action!r}.")
            outcome.done += 1
        except (ReviewError, ProviderError) as exc:
            outcome.errors.append(f"{assignment.worker.external_id} on unit {assignment.task.unit.index}: {exc}")
    return outcome


def worker_block(*, worker: Worker, reason: str) -> Worker:
    """Block `worker` here and at their provider; their unsubmitted assignments are returned."""
    reason = reason.strip()
    if not reason:
        raise ReviewError("Blocking needs a reason.")
    with transaction.atomic():
        locked = Worker.objects.select_for_update().get(pk=worker.pk)
        if not locked.blocked:
            get_provider(locked.provider).block(locked, reason)
        locked.blocked = True
        locked.blocked_reason = reason
        locked.save(update_fields=["blocked", "blocked_reason"])
        Assignment.objects.filter(worker=locked, status=Status.ACCEPTED).update(status=Status.RETURNED,
                                                                                slot=None)
    return locked


# --- batches -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GoldAnswer:
    category: str
    words: tuple[str, ...]


def batch_create(*, title: str, units: Sequence[Unit], instructions: str = "",
                 gold: dict[int, GoldAnswer] | None = None, provider: str = Provider.LOCAL,
                 assignments_per_task: int = 3, images_per_task: int = 20, reward: Decimal = Decimal("0.10"),
                 assignment_duration: timedelta = timedelta(minutes=30), lifetime: timedelta = timedelta(days=7),
                 auto_reject_failed_gold: bool = False, block_below_accuracy: float | None = None,
                 block_min_gold: int = 2, prolific_completion_code: str = "", created_by: Any = None) -> Batch:
    """A draft batch with one label task per unit; `gold` maps unit pk to its known answer.

    Gold units not in `units` are added; tasks are ordered as given, so gold units sit among the others.
    """
    gold = gold or {}
    if not title.strip():
        raise InvalidAnswer("Title: a batch needs a title.")
    unit_list = list(dict.fromkeys(units))
    by_pk = {unit.pk: unit for unit in unit_list}
    missing_gold = [pk for pk in gold if pk not in by_pk]
    extra = list(Unit.objects.filter(pk__in=missing_gold).order_by("layer", "index"))
    if len(extra) != len(missing_gold):
        raise InvalidAnswer("Gold units: a gold unit does not exist.")
    unit_list += extra
    if not unit_list:
        raise InvalidAnswer("Units: the selection is empty.")
    for pk, answer in gold.items():
        if answer.category not in categories.CODES:
            raise InvalidAnswer(f"Gold units: category {answer.category!r} is not one of "
                                f"{', '.join(categories.CODES)}.")
        if not [w for w in answer.words if w.strip()]:
            raise InvalidAnswer("Gold units: every gold unit needs at least one accepted word.")
    if provider not in Provider.values:
        raise InvalidAnswer(f"Provider: {provider!r} is not one of {', '.join(Provider.values)}.")
    with transaction.atomic():
        batch = Batch(
            title=title.strip(), instructions=instructions, provider=provider,
            assignments_per_task=assignments_per_task, images_per_task=images_per_task, reward=reward,
            assignment_duration=assignment_duration, lifetime=lifetime,
            auto_reject_failed_gold=auto_reject_failed_gold, block_below_accuracy=block_below_accuracy,
            block_min_gold=block_min_gold, prolific_completion_code=prolific_completion_code.strip(),
            created_by=created_by)
        batch.full_clean()
        batch.save()
        Task.objects.bulk_create([
            Task(batch=batch, unit=unit, position=position, is_gold=unit.pk in gold,
                 gold_category=gold[unit.pk].category if unit.pk in gold else "",
                 gold_words=[w.strip() for w in gold[unit.pk].words if w.strip()] if unit.pk in gold else [])
            for position, unit in enumerate(unit_list)
        ])
    return batch


def batch_publish(*, batch: Batch, now: datetime | None = None) -> Batch:
    """Open a draft or paused batch to workers; the provider publishes first (idempotently)."""
    if batch.state not in (Batch.State.DRAFT, Batch.State.PAUSED):
        raise ReviewError(f"A {batch.get_state_display().lower()} batch cannot be published.")
    if not batch.tasks.exists():
        raise ReviewError("This batch has no tasks.")
    now = now or timezone.now()
    provider = get_provider(batch.provider)
    provider.check_publishable(batch)
    if batch.expires_at is None:
        Batch.objects.filter(pk=batch.pk).update(expires_at=now + batch.lifetime)
        batch.expires_at = now + batch.lifetime
    provider.publish(batch)
    with transaction.atomic():
        batch.state = Batch.State.PUBLISHED
        batch.published_at = batch.published_at or now
        batch.save(update_fields=["state", "published_at", "updated_at"])
    return batch


def batch_pause(*, batch: Batch) -> Batch:
    """Stop handing out tasks; accepted assignments may still be submitted."""
    if batch.state != Batch.State.PUBLISHED:
        raise ReviewError("Only a published batch can be paused.")
    get_provider(batch.provider).pause(batch)
    batch.state = Batch.State.PAUSED
    batch.save(update_fields=["state", "updated_at"])
    return batch


def batch_cancel(*, batch: Batch) -> Batch:
    """Close the batch for good; unsubmitted assignments are returned, submitted ones stay reviewable."""
    if batch.state in (Batch.State.CANCELLED, Batch.State.FINISHED):
        raise ReviewError(f"This batch is already {batch.get_state_display().lower()}.")
    if batch.state != Batch.State.DRAFT:
        get_provider(batch.provider).cancel(batch)
    with transaction.atomic():
        batch.state = Batch.State.CANCELLED
        batch.save(update_fields=["state", "updated_at"])
        Assignment.objects.filter(task__batch=batch, status=Status.ACCEPTED).update(status=Status.RETURNED,
                                                                                    slot=None)
    return batch


def batch_sync(*, batch: Batch) -> SyncResult:
    """Reconcile assignment states with the batch's provider (MTurk: list_assignments_for_hit)."""
    return get_provider(batch.provider).sync(batch)


_MTURK_DECIDED = {"Approved": Status.APPROVED, "Rejected": Status.REJECTED}


def mturk_reconcile(*, provider: Any, task: Task, remote: dict[str, Any], result: SyncResult) -> None:
    """Apply one MTurk assignment record: push decisions made here, mirror decisions made there."""
    remote_id, remote_status = remote["AssignmentId"], remote["AssignmentStatus"]
    local = Assignment.objects.filter(mturk_assignment_id=remote_id).select_related("worker").first()
    if local is None:
        result.unknown.append(remote_id)
        return
    if remote_status == "Submitted" and local.status in (Status.APPROVED, Status.REJECTED):
        if local.status == Status.APPROVED:
            provider.approve(local, local.feedback)
        else:
            provider.reject(local, local.feedback or AUTO_REJECT_FEEDBACK)
        result.pushed += 1
    elif remote_status in _MTURK_DECIDED and local.status == Status.SUBMITTED:
        local.status = _MTURK_DECIDED[remote_status]
        local.reviewed_at = timezone.now()
        if local.status == Status.REJECTED:
            local.slot = None
            local.feedback = remote.get("RequesterFeedback", "") or local.feedback
        local.save(update_fields=["status", "slot", "feedback", "reviewed_at"])
        result.updated += 1


# --- units -------------------------------------------------------------------------------------------------

@dataclass
class _UnitFolder:
    folder: Path
    layer: str
    index: int
    images: list[Path]
    meta: dict[str, Any]


def _parse_unit_folder(folder: Path) -> _UnitFolder:
    layer, sep, index = folder.name.rpartition("_")
    if not sep or not layer or not index.isdigit():
        raise ImportUnitsError(f"{folder}: a unit folder is named <layer>_<unit index>, e.g. conv4_12")
    images: list[Path] = []
    meta: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.name == UNIT_META:
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ImportUnitsError(f"{path}: not valid JSON ({exc})") from None
            if not isinstance(meta, dict):
                raise ImportUnitsError(f"{path}: expected a JSON object")
            continue
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ImportUnitsError(f"{path}: not an image (expected {', '.join(sorted(IMAGE_SUFFIXES))}) "
                                   f"or {UNIT_META}")
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, UnidentifiedImageError) as exc:
            raise ImportUnitsError(f"{path}: unreadable image ({exc})") from None
        images.append(path)
    if not images:
        raise ImportUnitsError(f"{folder}: no images in this unit folder")
    activations = meta.get("activations")
    if activations is not None and (not isinstance(activations, list) or len(activations) != len(images)
                                    or not all(isinstance(a, int | float) for a in activations)):
        raise ImportUnitsError(f"{folder / UNIT_META}: 'activations' must list one number per image "
                               f"({len(images)})")
    category = meta.get("category", "")
    if not isinstance(category, str):
        raise ImportUnitsError(f"{folder / UNIT_META}: 'category' must be a string")
    return _UnitFolder(folder, layer, int(index), images, meta)


def units_import(*, run_name: str, directory: Path) -> list[Unit]:
    """Import one sub-folder per unit (`<layer>_<index>/` with images ranked by file name and an optional
    unit.json: label, category, iou, interpretable, threshold, activations) into the run `run_name`.

    Everything is checked before anything is written; a failure names the folder or file and leaves the
    database and media storage as they were.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ImportUnitsError(f"{directory}: not a folder")
    folders = [_parse_unit_folder(p) for p in sorted(directory.iterdir())
               if p.is_dir() and not p.name.startswith(".")]
    if not folders:
        raise ImportUnitsError(f"{directory}: no unit sub-folders (expected <layer>_<unit index>/)")
    run = DissectionRun.objects.filter(name=run_name).first()
    if run is not None:
        for parsed in folders:
            if run.units.filter(layer=parsed.layer, index=parsed.index).exists():
                raise ImportUnitsError(f"{parsed.folder}: unit {parsed.layer}#{parsed.index} is already in "
                                       f"run {run_name!r}")
    saved: list[str] = []
    try:
        with transaction.atomic():
            run, _ = DissectionRun.objects.get_or_create(
                name=run_name, defaults={"status": DissectionRun.Status.DONE, "progress": 1.0,
                                         "finished_at": timezone.now()})
            run.layers = sorted(set(run.layers) | {f.layer for f in folders})
            run.save(update_fields=["layers"])
            units = [_unit_create(run, parsed, saved) for parsed in folders]
    except Exception:
        for name in saved:
            default_storage.delete(name)
        raise
    return units


def _unit_create(run: DissectionRun, parsed: _UnitFolder, saved: list[str]) -> Unit:
    meta = parsed.meta
    unit = Unit.objects.create(
        run=run, layer=parsed.layer, index=parsed.index, label=str(meta.get("label", ""))[:200],
        category=meta.get("category", "")[:50], iou=meta.get("iou"), interpretable=meta.get("interpretable"),
        threshold=meta.get("threshold"), top_concepts=meta.get("top_concepts", []))
    activations = meta.get("activations") or [None] * len(parsed.images)
    for rank, (path, activation) in enumerate(zip(parsed.images, activations, strict=True)):
        image = UnitImage(unit=unit, rank=rank, max_activation=activation, source_image=path.name)
        with path.open("rb") as handle:
            image.image.save(f"{run.pk}/{parsed.layer}/{parsed.index}/{rank:03d}{path.suffix.lower()}",
                             File(handle), save=False)
        saved.append(image.image.name)
        image.save()
    return unit


def random_worker_id() -> str:
    return f"worker-{random.SystemRandom().randrange(16**8):08x}"
