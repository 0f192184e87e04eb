"""Services: slots, expiry, submission rules, gold, review and batch life cycle."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from agreement.gold import gold_matches
from annotate import selectors, services
from annotate.errors import (
    AlreadyDone,
    AssignmentClosed,
    AssignmentExpired,
    BatchClosed,
    InvalidAnswer,
    ReviewError,
    TaskFull,
    WorkerBlocked,
    WrongProvider,
)
from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Provider

Status = Assignment.Status


def _worker(name: str) -> CrowdWorker:
    return services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=name)


def _submit(assignment: Assignment, **kwargs: object) -> services.SubmitOutcome:
    data = {"words": "red", "category": "color", "rejected_ranks": [1]} | kwargs
    return services.annotation_submit(assignment=assignment, **data)


def test_slots_are_handed_out_up_to_the_batch_limit(batch: Batch) -> None:
    task = batch.tasks.first()
    a = services.assignment_accept(task=task, worker=_worker("a"))
    b = services.assignment_accept(task=task, worker=_worker("b"))
    assert {a.slot, b.slot} == {0, 1}
    with pytest.raises(TaskFull):
        services.assignment_accept(task=task, worker=_worker("c"))
    assert task.assignments.count() == 2


def test_accepting_twice_returns_the_same_assignment(batch: Batch, worker: CrowdWorker) -> None:
    task = batch.tasks.first()
    first = services.assignment_accept(task=task, worker=worker)
    assert services.assignment_accept(task=task, worker=worker).pk == first.pk
    assert task.assignments.count() == 1


def test_database_refuses_two_live_assignments_in_one_slot(batch: Batch) -> None:
    task = batch.tasks.first()
    a = services.assignment_accept(task=task, worker=_worker("a"))
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(
            task=task, worker=_worker("b"), slot=a.slot, accepted_at=timezone.now(), deadline=timezone.now()
        )


def test_database_refuses_a_live_assignment_without_slot(batch: Batch, worker: CrowdWorker) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(
            task=batch.tasks.first(),
            worker=worker,
            slot=None,
            accepted_at=timezone.now(),
            deadline=timezone.now(),
        )


def test_database_refuses_a_second_annotation(batch: Batch, worker: CrowdWorker) -> None:
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    _submit(assignment)
    with pytest.raises(IntegrityError), transaction.atomic():
        Annotation.objects.create(assignment=assignment, words="x", category="color")


def test_expired_assignment_frees_its_slot(batch: Batch) -> None:
    task = batch.tasks.first()
    late = services.assignment_accept(task=task, worker=_worker("a"))
    services.assignment_accept(task=task, worker=_worker("b"))
    Assignment.objects.filter(pk=late.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    third = services.assignment_accept(task=task, worker=_worker("c"))  # expires `late` lazily
    assert third.slot == late.slot
    late.refresh_from_db()
    assert (late.status, late.slot) == (Status.EXPIRED, None)


def test_expiry_service_counts_and_frees(batch: Batch, worker: CrowdWorker) -> None:
    past = timezone.now() - timedelta(hours=1)
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker, now=past)
    assert services.assignment_expire_overdue() == 1
    assert services.assignment_expire_overdue() == 0
    assignment.refresh_from_db()
    assert (assignment.status, assignment.slot) == (Status.EXPIRED, None)


def test_submit_after_deadline_stores_nothing(batch: Batch, worker: CrowdWorker) -> None:
    assignment = services.assignment_accept(
        task=batch.tasks.first(), worker=worker, now=timezone.now() - timedelta(hours=1)
    )
    with pytest.raises(AssignmentExpired):
        _submit(assignment)
    assert not Annotation.objects.exists()
    assignment.refresh_from_db()
    assert assignment.status == Status.EXPIRED


def test_expired_worker_may_take_the_task_again(batch: Batch, worker: CrowdWorker) -> None:
    task = batch.tasks.first()
    old = services.assignment_accept(task=task, worker=worker, now=timezone.now() - timedelta(hours=1))
    services.assignment_expire_overdue()
    again = services.assignment_accept(task=task, worker=worker)
    assert again.pk == old.pk and again.status == Status.ACCEPTED and again.slot is not None


def test_submit_stores_answer_precision_and_time(batch: Batch, worker: CrowdWorker) -> None:
    start = timezone.now()
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker, now=start)
    outcome = _submit(
        assignment, words="  red   car ", rejected_ranks=[3, 1, 1], now=start + timedelta(seconds=7)
    )
    a = outcome.annotation
    assert (a.words, a.category, a.rejected_ranks, a.shown_count) == ("red car", "color", [1, 3], 4)
    assert a.precision == pytest.approx((4 - 2) / 4)
    assert a.time_spent_ms == 7000
    assignment.refresh_from_db()
    assert assignment.status == Status.SUBMITTED and assignment.submitted_at == start + timedelta(seconds=7)


def test_double_submit_stores_one_annotation(batch: Batch, worker: CrowdWorker) -> None:
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    first = _submit(assignment)
    replay = _submit(assignment, words="something else")
    assert replay.replay and replay.annotation.pk == first.annotation.pk
    assert Annotation.objects.get().words == "red"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"words": "   "}, "Words"),
        ({"words": "x" * 41}, "at most 40"),
        ({"category": "animal"}, "Category"),
        ({"rejected_ranks": [4]}, "rank 4"),
        ({"rejected_ranks": [-1]}, "rank -1"),
    ],
)
def test_invalid_answers_store_nothing(batch: Batch, worker: CrowdWorker, kwargs: dict, message: str) -> None:
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    with pytest.raises(InvalidAnswer, match=message):
        _submit(assignment, **kwargs)
    assert not Annotation.objects.exists()
    assignment.refresh_from_db()
    assert assignment.status == Status.ACCEPTED


def test_returned_assignment_cannot_be_submitted(batch: Batch, worker: CrowdWorker) -> None:
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    services.assignment_return(assignment=assignment)
    with pytest.raises(AssignmentClosed):
        _submit(assignment)
    assignment.refresh_from_db()
    assert assignment.slot is None


def test_closed_batch_refuses_work(batch: Batch, worker: CrowdWorker) -> None:
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    services.batch_cancel(batch=batch)
    with pytest.raises(BatchClosed):
        services.assignment_accept(task=batch.tasks.last(), worker=worker)
    assignment.refresh_from_db()
    assert assignment.status == Status.RETURNED  # cancel returns unsubmitted work
    with pytest.raises(AssignmentClosed):
        _submit(assignment)


def test_paused_batch_takes_submissions_but_no_new_work(batch: Batch, worker: CrowdWorker) -> None:
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    services.batch_pause(batch=batch)
    with pytest.raises(BatchClosed):
        services.assignment_accept(task=batch.tasks.last(), worker=worker)
    _submit(assignment)
    services.batch_publish(batch=batch)
    assert services.assignment_accept(task=batch.tasks.last(), worker=worker).status == Status.ACCEPTED


def test_blocked_worker_cannot_accept_or_submit(batch: Batch, worker: CrowdWorker) -> None:
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    services.crowd_worker_block(worker=worker, reason="spam")
    with pytest.raises(WorkerBlocked):
        services.assignment_accept(task=batch.tasks.last(), worker=worker)
    assignment.refresh_from_db()
    assert assignment.status == Status.RETURNED


def test_open_tasks_skip_done_and_full_tasks(batch: Batch) -> None:
    alice, bob, carol = _worker("alice"), _worker("bob"), _worker("carol")
    first = services.assignment_accept(
        task=selectors.tasks_open_for_worker(batch=batch, worker=alice).first(), worker=alice
    )
    _submit(first)
    assert selectors.tasks_open_for_worker(batch=batch, worker=alice).first().position == 1
    services.assignment_accept(task=batch.tasks.get(position=0), worker=bob)
    # task 0 is full (alice + bob): carol is offered tasks 1 and 2 only
    assert [t.position for t in selectors.tasks_open_for_worker(batch=batch, worker=carol)] == [1, 2]
    with pytest.raises(AlreadyDone):
        services.assignment_accept(task=first.task, worker=alice)


def test_worker_of_another_provider_is_refused(batch: Batch) -> None:
    outsider = services.crowd_worker_get_or_create(provider=Provider.PROLIFIC, external_id="pid")
    with pytest.raises(WrongProvider):
        services.assignment_accept(task=batch.tasks.first(), worker=outsider)


def test_gold_matching_rule() -> None:
    gold = {"gold_category": "color", "gold_words": ["Red", "red circle"]}
    assert gold_matches(words="red", category="color", **gold)
    assert gold_matches(words="RED  Circle!", category="color", **gold)
    assert gold_matches(words="dark red", category="color", **gold)
    assert not gold_matches(words="red", category="object", **gold)
    assert not gold_matches(words="blue", category="color", **gold)


def test_gold_updates_accuracy_and_stays_hidden_from_the_answer(
    gold_batch: Batch, worker: CrowdWorker
) -> None:
    gold_task = gold_batch.tasks.get(is_gold=True)
    ok = services.assignment_accept(task=gold_task, worker=worker)
    _submit(ok, words="red", category="color")
    bad = services.assignment_accept(task=gold_task, worker=_worker("bob"))
    _submit(bad, words="tree", category="object")
    ok.refresh_from_db()
    bad.refresh_from_db()
    assert (ok.gold_passed, bad.gold_passed) == (True, False)
    assert bad.status == Status.SUBMITTED  # no auto-reject configured
    worker.refresh_from_db()
    assert (worker.gold_correct, worker.gold_total, worker.gold_accuracy) == (1, 1, 1.0)


def test_failed_gold_auto_rejects_and_blocks_below_threshold(make_batch, units) -> None:
    batch = make_batch(
        gold={
            units[0].pk: services.GoldAnswer("color", ("red",)),
            units[1].pk: services.GoldAnswer("texture", ("stripes",)),
        },
        auto_reject_failed_gold=True,
        block_below_accuracy=0.6,
        block_min_gold=2,
    )
    worker = _worker("mallory")
    first = services.assignment_accept(task=batch.tasks.get(unit=units[0]), worker=worker)
    _submit(first, words="blue", category="color")
    first.refresh_from_db()
    assert (first.status, first.slot, first.gold_passed) == (Status.REJECTED, None, False)
    assert first.feedback == services.AUTO_REJECT_FEEDBACK
    worker.refresh_from_db()
    assert not worker.blocked  # one gold answer is below block_min_gold
    second = services.assignment_accept(task=batch.tasks.get(unit=units[1]), worker=worker)
    _submit(second, words="stripes", category="texture")
    worker.refresh_from_db()
    assert worker.blocked and "50%" in worker.blocked_reason  # 1/2 < 60%
    assert Annotation.objects.filter(assignment=second).exists()  # the answer is kept


def test_approve_reject_and_bonus(batch: Batch) -> None:
    task = batch.tasks.first()
    a = services.assignment_accept(task=task, worker=_worker("a"))
    b = services.assignment_accept(task=task, worker=_worker("b"))
    _submit(a)
    _submit(b)
    services.assignment_approve(assignment=a)
    with pytest.raises(ReviewError, match="feedback"):
        services.assignment_reject(assignment=b, feedback=" ")
    services.assignment_reject(assignment=b, feedback="Not about the images")
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, b.status, b.slot) == (Status.APPROVED, Status.REJECTED, None)
    with pytest.raises(ReviewError):
        services.assignment_approve(assignment=b)
    services.assignment_send_bonus(assignment=a, amount=Decimal("0.25"), reason="Great")
    a.refresh_from_db()
    assert a.bonus == Decimal("0.25")
    with pytest.raises(ReviewError, match="already"):
        services.assignment_send_bonus(assignment=a, amount=Decimal("0.25"), reason="Again")
    # the rejected answer's slot is free for a new worker
    assert services.assignment_accept(task=task, worker=_worker("c")).slot == 1
    assert task.assignments.filter(slot__isnull=False).count() == 2


def test_bulk_review_reports_each_failure(batch: Batch) -> None:
    a = services.assignment_accept(task=batch.tasks.first(), worker=_worker("a"))
    pending = services.assignment_accept(task=batch.tasks.last(), worker=_worker("b"))
    _submit(a)
    outcome = services.assignments_review(assignments=[a, pending], action="approve")
    assert outcome.done == 1
    assert len(outcome.errors) == 1 and "b on unit 3" in outcome.errors[0]  # channel 2, shown 1-based


def test_batch_finishes_when_every_slot_is_approved(make_batch, units) -> None:
    batch = make_batch(units=units[:1], assignments_per_task=1)
    a = services.assignment_accept(task=batch.tasks.get(), worker=_worker("a"))
    _submit(a)
    services.assignment_approve(assignment=a)
    batch.refresh_from_db()
    assert batch.state == Batch.State.FINISHED


def test_batch_create_validates_gold_and_title(units) -> None:
    with pytest.raises(InvalidAnswer, match="Title"):
        services.batch_create(title=" ", units=units)
    with pytest.raises(InvalidAnswer, match="category"):
        services.batch_create(
            title="t", units=units, gold={units[0].pk: services.GoldAnswer("animal", ("x",))}
        )
    with pytest.raises(InvalidAnswer, match="accepted word"):
        services.batch_create(
            title="t", units=units, gold={units[0].pk: services.GoldAnswer("color", (" ",))}
        )
    with pytest.raises(InvalidAnswer, match="empty"):
        services.batch_create(title="t", units=[])


def test_gold_unit_outside_the_selection_is_added(units) -> None:
    batch = services.batch_create(
        title="t", units=units[:1], gold={units[2].pk: services.GoldAnswer("color", ("red",))}
    )
    assert list(batch.tasks.values_list("unit__channel", "is_gold", "position")) == [
        (0, False, 0),
        (2, True, 1),
    ]


def test_publish_sets_expiry_and_prolific_needs_a_code(make_batch) -> None:
    batch = make_batch(publish=False, provider=Provider.PROLIFIC)
    from annotate.providers import ProviderError

    with pytest.raises(ProviderError, match="completion code"):
        services.batch_publish(batch=batch)
    batch.prolific_completion_code = "C0DE"
    batch.save()
    services.batch_publish(batch=batch)
    assert batch.state == Batch.State.PUBLISHED and batch.expires_at > timezone.now()
    with pytest.raises(ReviewError):
        services.batch_publish(batch=batch)


def test_batch_past_its_lifetime_takes_no_new_work(make_batch, worker: CrowdWorker) -> None:
    batch = make_batch(lifetime=timedelta(hours=1))
    with pytest.raises(BatchClosed, match="expired"):
        services.assignment_accept(
            task=batch.tasks.first(), worker=worker, now=timezone.now() + timedelta(hours=2)
        )


def test_reload_while_paused_returns_the_workers_own_assignment(batch: Batch, worker: CrowdWorker) -> None:
    task = batch.tasks.first()
    mine = services.assignment_accept(task=task, worker=worker)
    services.batch_pause(batch=batch)
    assert services.assignment_accept(task=task, worker=worker).pk == mine.pk
    with pytest.raises(BatchClosed):
        services.assignment_accept(task=task, worker=_worker("late"))
