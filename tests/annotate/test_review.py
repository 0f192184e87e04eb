"""Review at scale: approve the rest, filters, numbered tiles, confirmation before cancel / reject / block,
and the crowd worker page across a requester's batches (gold accuracy, median time, decisions, unblock)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from botocore.stub import Stubber
from django.test import Client

from annotate import selectors, services
from annotate.errors import ReviewError
from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Provider
from annotate.providers.base import CrowdProvider
from runs.models import DissectionRun, Project
from tests.factories import logged_in, run_create, staff_user, unit_create

Status = Assignment.Status


def _answer(
    batch: Batch,
    worker_id: str,
    position: int,
    *,
    words: str = "red",
    rejected: list[int] | None = None,
    time_ms: int | None = None,
) -> Assignment:
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=worker_id)
    assignment = services.assignment_accept(task=batch.tasks.get(position=position), worker=worker)
    services.annotation_submit(
        assignment=assignment, words=words, category="color", rejected_ranks=rejected or []
    )
    if time_ms is not None:
        Annotation.objects.filter(assignment=assignment).update(time_spent_ms=time_ms)
    assignment.refresh_from_db()
    return assignment


def _statuses(*assignments: Assignment) -> list[str]:
    for assignment in assignments:
        assignment.refresh_from_db()
    return [assignment.status for assignment in assignments]


@pytest.fixture
def answered(gold_batch: Batch) -> dict[str, Assignment]:
    """Unit 0 is gold (color: red). alice: gold right, keeps all images; bob: gold wrong (words 'blue'),
    ticks 3 of 4 images (precision 0.25); carol: approved; dave: rejected; erin: accepted, not answered."""
    made = {
        "alice": _answer(gold_batch, "alice", 0, words="red"),
        "bob": _answer(gold_batch, "bob", 0, words="blue", rejected=[0, 1, 2]),
        "carol": _answer(gold_batch, "carol", 1, words="stripes"),
        "dave": _answer(gold_batch, "dave", 1, words="junk"),
    }
    services.assignment_approve(assignment=made["carol"])
    services.assignment_reject(assignment=made["dave"], feedback="Not what the images show.")
    erin = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id="erin")
    made["erin"] = services.assignment_accept(task=gold_batch.tasks.get(position=2), worker=erin)
    for assignment in made.values():
        assignment.refresh_from_db()
    return made


# --- approve the rest


def test_approve_the_rest_approves_exactly_the_pending_answers_not_kept(
    gold_batch: Batch, answered: dict[str, Assignment]
) -> None:
    frank = _answer(gold_batch, "frank", 2)
    unconfirmed = _answer(gold_batch, "gina", 1)
    Assignment.objects.filter(pk=unconfirmed.pk).update(verified=False)
    done = services.batch_approve_rest(batch=gold_batch, keep=[answered["bob"]], feedback="Thanks")
    assert done == 2
    assert _statuses(
        answered["alice"], frank, answered["bob"], answered["carol"], answered["dave"], answered["erin"]
    ) == [
        Status.APPROVED,
        Status.APPROVED,
        Status.SUBMITTED,
        Status.APPROVED,
        Status.REJECTED,
        Status.ACCEPTED,
    ]
    assert _statuses(unconfirmed) == [Status.SUBMITTED]  # the provider has not confirmed it: not approved
    assert answered["alice"].feedback == "Thanks" and answered["carol"].feedback == ""
    assert services.batch_approve_rest(batch=gold_batch, keep=[answered["bob"]]) == 0


def test_approve_the_rest_is_all_or_nothing(
    gold_batch: Batch, answered: dict[str, Assignment], monkeypatch: pytest.MonkeyPatch
) -> None:
    frank = _answer(gold_batch, "frank", 2)
    calls: list[int] = []

    def approve(self: CrowdProvider, assignment: Assignment, feedback: str) -> None:
        calls.append(assignment.pk)
        if len(calls) == 3:
            raise ReviewError("The provider refused.")

    monkeypatch.setattr(CrowdProvider, "approve", approve)
    with pytest.raises(ReviewError, match="refused"):
        services.batch_approve_rest(batch=gold_batch)
    assert len(calls) == 3
    assert _statuses(answered["alice"], answered["bob"], frank) == [Status.SUBMITTED] * 3


def test_approve_the_rest_from_the_page_leaves_the_ticked_ones(
    gold_batch: Batch, answered: dict[str, Assignment], staff_client: Client
) -> None:
    url = f"/batches/{gold_batch.public_id}/review/"
    response = staff_client.post(
        url, {"action": "approve_rest", "assignments": [str(answered["bob"].public_id)]}, follow=True
    )
    assert (
        "Approved the rest: 1 pending answer(s); the 1 ticked answer(s) were left"
        in response.content.decode()
    )
    assert _statuses(answered["alice"], answered["bob"]) == [Status.APPROVED, Status.SUBMITTED]


# --- filters


def _shown(batch: Batch, **filters: Any) -> set[str]:
    tasks = selectors.batch_review(batch=batch, filters=selectors.ReviewFilters(**filters))
    return {a.worker.external_id for task in tasks for a in task.review_assignments}


def test_filters_keep_the_right_answers(gold_batch: Batch, answered: dict[str, Assignment]) -> None:
    assert _shown(gold_batch) == {"alice", "bob", "carol", "dave", "erin"}
    assert _shown(gold_batch, status="pending") == {"alice", "bob"}
    assert _shown(gold_batch, status="approved") == {"carol"}
    assert _shown(gold_batch, status="rejected") == {"dave"}
    assert _shown(gold_batch, failed_gold=True) == {"bob"}
    assert _shown(gold_batch, low_precision=True) == {"bob"}
    assert _shown(gold_batch, worker=answered["carol"].worker) == {"carol"}
    assert _shown(gold_batch, status="approved", worker=answered["alice"].worker) == set()
    # Only tasks with a matching answer are listed; unfiltered, every task is.
    filtered = selectors.batch_review(batch=gold_batch, filters=selectors.ReviewFilters(status="rejected"))
    assert [t.position for t in filtered] == [1]
    assert [t.position for t in selectors.batch_review(batch=gold_batch)] == [0, 1, 2]


def test_review_page_filters_by_get_params_and_pages_keep_them(
    gold_batch: Batch, answered: dict[str, Assignment], staff_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"/batches/{gold_batch.public_id}/review/"
    page = staff_client.get(url, {"failed_gold": "on"}).content.decode()
    assert "<td>blue</td>" in page and "<td>red</td>" not in page and "<td>stripes</td>" not in page
    assert "1 unit(s) with answers that match the filters" in page
    carol = answered["carol"].worker
    page = staff_client.get(url, {"worker": str(carol.public_id)}).content.decode()
    assert "<td>stripes</td>" in page and "<td>junk</td>" not in page and "<td>blue</td>" not in page
    bad = staff_client.get(url, {"status": "maybe"})
    assert bad.status_code == 200 and "Showing every answer" in bad.content.decode()
    assert "<td>junk</td>" in bad.content.decode()
    monkeypatch.setattr(selectors, "REVIEW_PAGE_SIZE", 1)
    _answer(gold_batch, "frank", 2)
    pending = staff_client.get(url, {"status": "pending"}).content.decode()
    assert "Units 1–1 of 2" in pending and 'href="?status=pending&amp;page=2"' in pending
    second = staff_client.get(url, {"status": "pending", "page": "2"}).content.decode()
    assert "Units 2–2 of 2" in second and "frank" in second and "<td>blue</td>" not in second


def test_review_tiles_are_numbered_and_show_who_ticked_them(
    gold_batch: Batch, answered: dict[str, Assignment], staff_client: Client
) -> None:
    page = staff_client.get(f"/batches/{gold_batch.public_id}/review/").content.decode()
    for number in range(1, gold_batch.images_per_task + 1):
        assert f'<span class="number" aria-hidden="true">{number}</span>' in page
    assert 'alt="Image 1, ticked as not fitting by bob"' in page
    assert 'alt="Image 4"' in page
    assert '<span class="ticked-numbers">1, 2, 3</span>' in page
    workers = {w.external_id: w for w in selectors.batch_workers(batch=gold_batch)}
    assert {name: (w.done, w.gold_right_here, w.gold_here) for name, w in workers.items()} == {
        "alice": (1, 1, 1),
        "bob": (1, 0, 1),
        "carol": (1, 0, 0),
        "dave": (1, 0, 0),
        "erin": (0, 0, 0),
    }
    unit = gold_batch.tasks.get(position=0).unit
    assert f'href="/units/{unit.pk}/"' in page and f"unit {unit.channel + 1} · channel {unit.channel}" in page


# --- confirmation before destructive actions


def test_cancel_without_confirmation_changes_nothing(
    gold_batch: Batch, answered: dict[str, Assignment], staff_client: Client
) -> None:
    url = f"/batches/{gold_batch.public_id}/cancel/"
    page = staff_client.post(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Nothing has changed yet" in html and "cancelled for good" in html
    assert "the 1 task(s) in progress now are returned" in html
    assert 'name="confirm" value="yes"' in html
    gold_batch.refresh_from_db()
    assert gold_batch.state == Batch.State.PUBLISHED
    assert _statuses(answered["erin"]) == [Status.ACCEPTED]
    assert staff_client.post(url, {"confirm": "no"}).status_code == 200
    gold_batch.refresh_from_db()
    assert gold_batch.state == Batch.State.PUBLISHED
    assert staff_client.post(url, {"confirm": "yes"}).status_code == 302
    gold_batch.refresh_from_db()
    assert gold_batch.state == Batch.State.CANCELLED
    assert _statuses(answered["erin"]) == [Status.RETURNED]


def test_pause_stays_one_click(batch: Batch, staff_client: Client) -> None:
    assert staff_client.post(f"/batches/{batch.public_id}/pause/").status_code == 302
    batch.refresh_from_db()
    assert batch.state == Batch.State.PAUSED


def test_reject_without_confirmation_changes_nothing(
    gold_batch: Batch, answered: dict[str, Assignment], staff_client: Client
) -> None:
    url = f"/batches/{gold_batch.public_id}/review/?status=pending"
    data = {
        "action": "reject",
        "assignments": [str(answered["bob"].public_id)],
        "feedback": "Blue <is> not red",
    }
    page = staff_client.post(url, data)
    html = page.content.decode()
    assert page.status_code == 200 and "Reject 1 answer(s)?" in html
    assert "Blue &lt;is&gt; not red" in html and "Blue <is>" not in html
    assert f'name="assignments" value="{answered["bob"].public_id}"' in html
    assert f'action="{url}"' in html.replace("&amp;", "&")
    assert _statuses(answered["bob"]) == [Status.SUBMITTED]
    confirmed = staff_client.post(url, {**data, "confirm": "yes"})
    assert confirmed.status_code == 302 and confirmed.url == url
    assert _statuses(answered["bob"]) == [Status.REJECTED]
    assert answered["bob"].feedback == "Blue <is> not red"


def test_block_without_confirmation_changes_nothing_and_unblock_undoes_it(
    gold_batch: Batch, answered: dict[str, Assignment], staff_client: Client
) -> None:
    erin = answered["erin"].worker
    url = f"/crowd-workers/{erin.public_id}/block/"
    assert staff_client.post(url, {"reason": ""}, follow=True).status_code == 200
    page = staff_client.post(url, {"reason": "copy-paste answers"})
    html = page.content.decode()
    assert page.status_code == 200 and "blocked everywhere" in html and "copy-paste answers" in html
    erin.refresh_from_db()
    assert not erin.blocked and _statuses(answered["erin"]) == [Status.ACCEPTED]
    assert staff_client.post(url, {"reason": "copy-paste answers", "confirm": "yes"}).status_code == 302
    erin.refresh_from_db()
    assert erin.blocked and erin.blocked_reason == "copy-paste answers"
    assert _statuses(answered["erin"]) == [Status.RETURNED]
    detail = staff_client.get(f"/crowd-workers/{erin.public_id}/").content.decode()
    assert "Unblock erin" in detail
    assert staff_client.post(f"/crowd-workers/{erin.public_id}/unblock/").status_code == 302
    erin.refresh_from_db()
    assert not erin.blocked and erin.blocked_reason == ""
    again = staff_client.post(f"/crowd-workers/{erin.public_id}/unblock/", follow=True)
    assert "erin is not blocked" in again.content.decode()


def test_unblock_lifts_the_block_on_mturk(db: None, stub: Stubber) -> None:
    worker = services.crowd_worker_get_or_create(provider=Provider.MTURK, external_id="WKR9")
    stub.add_response("create_worker_block", {}, {"WorkerId": "WKR9", "Reason": "Spam"})
    services.crowd_worker_block(worker=worker, reason="Spam")
    stub.add_response("delete_worker_block", {}, {"WorkerId": "WKR9"})
    services.crowd_worker_unblock(worker=worker)
    worker.refresh_from_db()
    assert not worker.blocked


# --- the crowd worker page


def test_crowd_worker_page_sums_up_their_work_in_ones_batches(
    make_batch: Any, gold_batch: Batch, staff_client: Client, django_user_model: Any
) -> None:
    first = _answer(gold_batch, "alice", 0, words="blue", time_ms=4000)  # fails gold
    second = _answer(gold_batch, "alice", 1, time_ms=10000)
    services.assignment_approve(assignment=second)
    services.assignment_send_bonus(assignment=second, amount=Decimal("0.25"), reason="Careful")
    other_batch = make_batch(
        title="Second batch",
        gold={gold_batch.tasks.get(position=0).unit_id: services.GoldAnswer("color", ("red",))},
    )
    _answer(other_batch, "alice", 0, words="red", time_ms=6000)  # passes gold
    # alice's work in another lab's batch is neither shown nor counted here.
    other = Project.objects.create(name="Other lab")
    run = run_create("other run", project=other, status=DissectionRun.Status.DONE, layers=["conv4"])
    foreign = services.batch_create(
        title="Other lab's batch",
        units=[unit_create(run, 0, label="x")],
        gold={},
    )
    services.batch_publish(batch=foreign)
    _answer(foreign, "alice", 0, words="secret-word", time_ms=999000)

    alice = CrowdWorker.objects.get(external_id="alice")
    overview = selectors.crowd_worker_overview(user=_staff(staff_client), worker_id=alice.public_id)
    assert overview is not None
    assert (overview.gold_total, overview.gold_correct) == (2, 1)
    assert overview.median_time_ms == 6000
    assert overview.decisions == {"pending": 2, "approved": 1, "rejected": 0}
    assert overview.bonus_total == Decimal("0.25")
    assert {b.title for b in overview.batches} == {gold_batch.title, "Second batch"}
    page = staff_client.get(f"/crowd-workers/{alice.public_id}/").content.decode()
    assert "50 % (1 of 2 check items right)" in page and "6 s" in page
    assert "1 approved · 0 rejected · 2 pending" in page and "0.25 USD" in page
    assert "secret-word" not in page and "Other lab" not in page
    assert first.task.batch.title in page


def _staff(client: Client) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(pk=client.session["_auth_user_id"])


def test_crowd_worker_page_is_404_to_a_requester_they_never_worked_for(
    batch: Batch, django_user_model: Any
) -> None:
    _answer(batch, "alice", 0)
    alice = CrowdWorker.objects.get(external_id="alice")
    outsider = logged_in(
        staff_user(django_user_model, "outsider", project=Project.objects.create(name="Lab B"))
    )
    assert outsider.get(f"/crowd-workers/{alice.public_id}/").status_code == 404
    assert outsider.post(f"/crowd-workers/{alice.public_id}/unblock/").status_code == 404
    response = outsider.post(f"/crowd-workers/{alice.public_id}/block/", {"reason": "x", "confirm": "yes"})
    assert response.status_code == 404
    alice.refresh_from_db()
    assert not alice.blocked
