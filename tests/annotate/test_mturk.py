"""MTurk through botocore's Stubber: every call is checked against the real MTurk API model."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from botocore.stub import ANY, Stubber
from django.test import Client

from annotate import services
from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Provider
from annotate.providers import ProviderError
from annotate.providers.mturk import client as mturk
from tests.annotate.mturk_stubs import expect_publish, hit_answer

Status = Assignment.Status


@pytest.fixture
def mturk_batch(make_batch, stub: Stubber) -> Batch:
    batch = make_batch(provider=Provider.MTURK, publish=False)
    expect_publish(stub, batch)
    services.batch_publish(batch=batch)
    return batch


def test_publish_creates_a_hit_type_and_one_external_question_hit_per_task(mturk_batch: Batch) -> None:
    assert mturk_batch.mturk_hit_type_id == "TYPE1"
    assert list(mturk_batch.tasks.values_list("mturk_hit_id", flat=True)) == ["HIT0", "HIT1", "HIT2"]
    assert mturk_batch.state == Batch.State.PUBLISHED


def test_retried_publish_never_makes_a_second_hit(make_batch, stub: Stubber) -> None:
    batch = make_batch(provider=Provider.MTURK, publish=False)
    tasks = list(batch.tasks.order_by("position"))
    stub.add_response("create_hit_type", {"HITTypeId": "TYPE1"})
    stub.add_response("create_hit_with_hit_type", hit_answer("HIT0"))
    stub.add_client_error("create_hit_with_hit_type", "ServiceFault", "network went away")
    stub.add_response("list_hits", {"HITs": [], "NumResults": 0})
    with pytest.raises(ProviderError, match="network went away"):
        services.batch_publish(batch=batch)
    batch.refresh_from_db()
    assert batch.state == Batch.State.DRAFT
    # Retry: task 0 already has its HIT; task 1's HIT was in fact created, MTurk refuses the same token, and
    # the HIT is found again by its RequesterAnnotation (second page of list_hits).
    stub.add_client_error(
        "create_hit_with_hit_type",
        "RequestError",
        "HitAlreadyExists",
        expected_params={
            "HITTypeId": "TYPE1",
            "MaxAssignments": 2,
            "LifetimeInSeconds": ANY,
            "Question": ANY,
            "RequesterAnnotation": str(tasks[1].public_id),
            "UniqueRequestToken": tasks[1].public_id.hex,
        },
    )
    stub.add_response(
        "list_hits",
        {"HITs": [{"HITId": "OTHER", "RequesterAnnotation": "x"}], "NextToken": "p2"},
        {"MaxResults": 100},
    )
    stub.add_response(
        "list_hits",
        {"HITs": [{"HITId": "HIT1", "RequesterAnnotation": str(tasks[1].public_id)}]},
        {"MaxResults": 100, "NextToken": "p2"},
    )
    stub.add_response("create_hit_with_hit_type", hit_answer("HIT2"))
    services.batch_publish(batch=batch)
    assert list(batch.tasks.values_list("mturk_hit_id", flat=True)) == ["HIT0", "HIT1", "HIT2"]


def test_publish_needs_an_https_site(make_batch, settings) -> None:
    settings.SITE_URL = "http://127.0.0.1:8000"
    batch = make_batch(provider=Provider.MTURK, publish=False)
    with pytest.raises(ProviderError, match="HTTPS"):
        services.batch_publish(batch=batch)


def _task_url(task, **params: str) -> str:
    return f"/mturk/task/{task.public_id}/?{urlencode(params)}"


def _open(client: Client, task, assignment_id: str = "ASG1", worker_id: str = "WKR1"):
    return client.get(
        _task_url(
            task,
            assignmentId=assignment_id,
            hitId=task.mturk_hit_id,
            workerId=worker_id,
            turkSubmitTo="https://workersandbox.mturk.com",
        )
    )


def test_preview_is_framable_by_mturk_only_and_disabled(mturk_batch: Batch) -> None:
    task = mturk_batch.tasks.first()
    response = Client().get(_task_url(task, assignmentId="ASSIGNMENT_ID_NOT_AVAILABLE", hitId="HIT0"))
    page = response.content.decode()
    assert response.status_code == 200 and "X-Frame-Options" not in response
    assert response["Content-Security-Policy"] == (
        "frame-ancestors https://worker.mturk.com https://workersandbox.mturk.com https://www.mturk.com"
    )
    assert "<fieldset disabled>" in page and page.count("<img ") == mturk_batch.images_per_task
    assert not Assignment.objects.exists()
    # every other page keeps the global DENY
    assert Client().get(f"/w/task/{task.public_id}/")["X-Frame-Options"] == "DENY"


def _not_yet(stub: Stubber, assignment_id: str = "ASG1") -> None:
    """MTurk's GetAssignment before the worker submitted there: no record of the assignment."""
    stub.add_client_error(
        "get_assignment",
        "RequestError",
        f"Assignment {assignment_id} does not exist. (1700000000000)",
        expected_params={"AssignmentId": assignment_id},
    )


def _confirmed(stub: Stubber, assignment_id: str, worker_id: str, hit_id: str = "HIT0") -> None:
    """MTurk's GetAssignment once the worker submitted there: its record names the worker and the HIT."""
    when = datetime(2026, 1, 1, tzinfo=UTC)
    stub.add_response(
        "get_assignment",
        {
            "Assignment": {
                "AssignmentId": assignment_id,
                "WorkerId": worker_id,
                "HITId": hit_id,
                "AssignmentStatus": "Submitted",
                "AcceptTime": when,
                "SubmitTime": when,
            }
        },
        {"AssignmentId": assignment_id},
    )


def test_mturk_worker_answers_and_is_sent_to_external_submit(
    mturk_batch: Batch, answer, stub: Stubber
) -> None:
    task = mturk_batch.tasks.first()
    client = Client(enforce_csrf_checks=True)
    page = _open(client, task)
    assert page.status_code == 200
    token = re.search(r'name="token" value="([^"]+)"', page.content.decode())[1]
    assignment = Assignment.objects.get()
    assert (assignment.mturk_assignment_id, assignment.mturk_hit_id, assignment.worker.external_id) == (
        "ASG1",
        "HIT0",
        "WKR1",
    )
    assert not assignment.verified and assignment.slot >= mturk_batch.assignments_per_task
    _not_yet(stub)
    done = client.post(f"/mturk/task/{task.public_id}/submit/", {**answer(), "token": token})
    html = done.content.decode()
    assert done.status_code == 200 and "X-Frame-Options" not in done
    assert 'action="https://workersandbox.mturk.com/mturk/externalSubmit"' in html
    assert 'name="assignmentId" value="ASG1"' in html
    assert Annotation.objects.get().words == "red"
    assert not Assignment.objects.get().verified  # MTurk has no record before its externalSubmit
    # a replay (MTurk retry or double click) stores nothing new
    _not_yet(stub)
    assert (
        client.post(
            f"/mturk/task/{task.public_id}/submit/", {**answer(words="x"), "token": token}
        ).status_code
        == 200
    )
    assert list(Annotation.objects.values_list("words", flat=True)) == ["red"]


def test_forged_token_or_foreign_submit_host_is_refused(mturk_batch: Batch, answer) -> None:
    task = mturk_batch.tasks.first()
    bad = Client().post(f"/mturk/task/{task.public_id}/submit/", {**answer(), "token": "forged"})
    assert bad.status_code == 403
    evil = Client().get(
        _task_url(task, assignmentId="A", hitId="H", workerId="W", turkSubmitTo="https://evil.example.com")
    )
    assert evil.status_code == 400 and not Assignment.objects.exists()


def test_mturk_arrivals_never_push_each_other_out(mturk_batch: Batch) -> None:
    task = mturk_batch.tasks.first()
    for n in range(3):  # 3 arrivals on a HIT of 2: nobody knows yet which ones MTurk really handed out
        assert _open(Client(), task, assignment_id=f"ASG{n}", worker_id=f"W{n}").status_code == 200
    rows = Assignment.objects.order_by("accepted_at", "pk")
    assert [(a.status, a.verified, a.slot) for a in rows] == [
        (Status.ACCEPTED, False, slot) for slot in (2, 3, 4)
    ]


def _submitted(
    batch: Batch,
    assignment_id: str,
    worker_id: str,
    answer_words: str = "red",
    *,
    stub: Stubber,
    confirmed: bool | None = False,
) -> Assignment:
    """An MTurk assignment answered through the services; MTurk confirms it at submit when `confirmed`
    (None: the caller queued MTurk's answers)."""
    task = batch.tasks.first()
    worker = services.crowd_worker_get_or_create(provider=Provider.MTURK, external_id=worker_id)
    assignment = services.assignment_accept(
        task=task,
        worker=worker,
        mturk_assignment_id=assignment_id,
        mturk_hit_id=task.mturk_hit_id,
        turk_submit_to="https://www.mturk.com",
    )
    if confirmed:
        _confirmed(stub, assignment_id, worker_id, task.mturk_hit_id)
    elif confirmed is not None:
        _not_yet(stub, assignment_id)
    services.annotation_submit(assignment=assignment, words=answer_words, category="color", rejected_ranks=[])
    assignment.refresh_from_db()
    assert confirmed is None or assignment.verified is confirmed
    return assignment


def test_review_actions_map_to_mturk_calls(mturk_batch: Batch, stub: Stubber) -> None:
    good = _submitted(mturk_batch, "ASG1", "WKR1", stub=stub, confirmed=True)
    bad = _submitted(mturk_batch, "ASG2", "WKR2", stub=stub, confirmed=True)
    stub.add_response("approve_assignment", {}, {"AssignmentId": "ASG1", "RequesterFeedback": "Thanks"})
    stub.add_response("reject_assignment", {}, {"AssignmentId": "ASG2", "RequesterFeedback": "Off topic"})
    stub.add_response(
        "create_additional_assignments_for_hit",
        {},
        {
            "HITId": "HIT0",
            "NumberOfAdditionalAssignments": 1,
            "UniqueRequestToken": f"more-{bad.public_id.hex}",
        },
    )
    stub.add_response(
        "send_bonus",
        {},
        {
            "WorkerId": "WKR1",
            "BonusAmount": "0.50",
            "AssignmentId": "ASG1",
            "Reason": "Careful work",
            "UniqueRequestToken": f"bonus-{good.public_id.hex}",
        },
    )
    stub.add_response("create_worker_block", {}, {"WorkerId": "WKR2", "Reason": "Spam"})
    services.assignment_approve(assignment=good, feedback="Thanks")
    services.assignment_reject(assignment=bad, feedback="Off topic")
    services.assignment_send_bonus(assignment=good, amount=Decimal("0.5"), reason="Careful work")
    services.crowd_worker_block(worker=CrowdWorker.objects.get(external_id="WKR2"), reason="Spam")
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.status, good.bonus, bad.status) == (Status.APPROVED, Decimal("0.50"), Status.REJECTED)


def test_failed_mturk_call_changes_nothing_here(mturk_batch: Batch, stub: Stubber) -> None:
    assignment = _submitted(mturk_batch, "ASG1", "WKR1", stub=stub)
    stub.add_client_error(
        "approve_assignment", "RequestError", "This operation can be called with a status of: Submitted"
    )
    with pytest.raises(ProviderError, match="approve_assignment failed: This operation"):
        services.assignment_approve(assignment=assignment)
    assignment.refresh_from_db()
    assert assignment.status == Status.SUBMITTED


def test_sync_pages_through_assignments_and_reconciles(mturk_batch: Batch, stub: Stubber) -> None:
    mine_approved = _submitted(mturk_batch, "ASG1", "WKR1", stub=stub)
    theirs_rejected = _submitted(mturk_batch, "ASG2", "WKR2", stub=stub)
    Assignment.objects.filter(pk=mine_approved.pk).update(status=Status.APPROVED, feedback="")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    remote = {"HITId": "HIT0", "AcceptTime": when, "SubmitTime": when}
    stub.add_response(
        "list_assignments_for_hit",
        {
            "Assignments": [
                {**remote, "WorkerId": "WKR1", "AssignmentId": "ASG1", "AssignmentStatus": "Submitted"}
            ],
            "NextToken": "n2",
            "NumResults": 1,
        },
        {"HITId": "HIT0", "MaxResults": 100},
    )
    stub.add_response(
        "list_assignments_for_hit",
        {
            "Assignments": [
                {
                    **remote,
                    "WorkerId": "WKR2",
                    "AssignmentId": "ASG2",
                    "AssignmentStatus": "Rejected",
                    "RequesterFeedback": "rejected on MTurk",
                },
                {**remote, "WorkerId": "W", "AssignmentId": "STRANGER", "AssignmentStatus": "Submitted"},
            ],
            "NumResults": 2,
        },
        {"HITId": "HIT0", "MaxResults": 100, "NextToken": "n2"},
    )
    stub.add_response("approve_assignment", {}, {"AssignmentId": "ASG1"})
    for hit in ("HIT1", "HIT2"):
        stub.add_response(
            "list_assignments_for_hit",
            {"Assignments": [], "NumResults": 0},
            {"HITId": hit, "MaxResults": 100},
        )
    result = services.batch_sync(batch=mturk_batch)
    assert (result.seen, result.verified, result.pushed, result.updated, result.unknown) == (
        3,
        2,
        1,
        1,
        ["STRANGER"],
    )
    theirs_rejected.refresh_from_db()
    assert (theirs_rejected.status, theirs_rejected.slot, theirs_rejected.feedback) == (
        Status.REJECTED,
        None,
        "rejected on MTurk",
    )


def test_auto_rejected_gold_is_pushed_to_mturk_on_sync(make_batch, units, stub: Stubber) -> None:
    batch = make_batch(
        provider=Provider.MTURK,
        publish=False,
        units=units[:1],
        auto_reject_failed_gold=True,
        gold={units[0].pk: services.GoldAnswer("texture", ("stripes",))},
    )
    stub.add_response("create_hit_type", {"HITTypeId": "TYPE1"})
    stub.add_response("create_hit_with_hit_type", hit_answer("HIT0"))
    services.batch_publish(batch=batch)
    assignment = _submitted(batch, "ASG1", "WKR1", answer_words="dots", stub=stub)
    # unconfirmed: not scored at submit; MTurk's record (the sync) scores and rejects it
    assert (assignment.status, assignment.gold_passed) == (Status.SUBMITTED, None)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    stub.add_response(
        "list_assignments_for_hit",
        {
            "Assignments": [
                {
                    "AssignmentId": "ASG1",
                    "HITId": "HIT0",
                    "WorkerId": "WKR1",
                    "AssignmentStatus": "Submitted",
                    "AcceptTime": when,
                    "SubmitTime": when,
                }
            ]
        },
    )
    stub.add_response(
        "reject_assignment", {}, {"AssignmentId": "ASG1", "RequesterFeedback": services.AUTO_REJECT_FEEDBACK}
    )
    stub.add_client_error(
        "create_additional_assignments_for_hit", "RequestError", "HIT expired"
    )  # logged only
    assert services.batch_sync(batch=batch).pushed == 1
    assignment.refresh_from_db()
    assert (assignment.status, assignment.gold_passed, assignment.verified) == (Status.REJECTED, False, True)


def test_pause_and_cancel_expire_the_hits(mturk_batch: Batch, stub: Stubber) -> None:
    for hit in ("HIT0", "HIT1", "HIT2"):
        stub.add_response("update_expiration_for_hit", {}, {"HITId": hit, "ExpireAt": ANY})
    services.batch_pause(batch=mturk_batch)
    for hit in ("HIT0", "HIT1", "HIT2"):
        stub.add_response("update_expiration_for_hit", {}, {"HITId": hit, "ExpireAt": mturk_batch.expires_at})
    services.batch_publish(batch=mturk_batch)
    for hit in ("HIT0", "HIT1", "HIT2"):
        stub.add_response("update_expiration_for_hit", {}, {"HITId": hit, "ExpireAt": ANY})
    services.batch_cancel(batch=mturk_batch)
    assert mturk_batch.state == Batch.State.CANCELLED


def test_client_is_the_sandbox_unless_configured(settings) -> None:
    settings.MTURK_SANDBOX = True
    assert mturk.mturk_client().meta.endpoint_url == mturk.SANDBOX_ENDPOINT
    settings.MTURK_SANDBOX = False
    assert mturk.mturk_client().meta.endpoint_url == "https://mturk-requester.us-east-1.amazonaws.com"


def test_failing_gold_blocks_the_worker_on_mturk(make_batch, units, stub: Stubber) -> None:
    batch = make_batch(
        provider=Provider.MTURK,
        publish=False,
        units=units[:1],
        block_below_accuracy=0.5,
        block_min_gold=1,
        gold={units[0].pk: services.GoldAnswer("texture", ("stripes",))},
    )
    stub.add_response("create_hit_type", {"HITTypeId": "TYPE1"})
    stub.add_response("create_hit_with_hit_type", hit_answer("HIT0"))
    services.batch_publish(batch=batch)
    _confirmed(stub, "ASG1", "WKR1")
    stub.add_response("create_worker_block", {}, {"WorkerId": "WKR1", "Reason": ANY})
    assignment = _submitted(batch, "ASG1", "WKR1", answer_words="dots", stub=stub, confirmed=None)
    worker = CrowdWorker.objects.get(external_id="WKR1")
    assert worker.blocked and "0%" in worker.blocked_reason
    assert Annotation.objects.filter(assignment=assignment).exists()


def test_block_failing_at_mturk_still_blocks_here_and_keeps_the_answer(
    make_batch, units, stub: Stubber
) -> None:
    batch = make_batch(
        provider=Provider.MTURK,
        publish=False,
        units=units[:1],
        block_below_accuracy=0.5,
        block_min_gold=1,
        gold={units[0].pk: services.GoldAnswer("texture", ("stripes",))},
    )
    stub.add_response("create_hit_type", {"HITTypeId": "TYPE1"})
    stub.add_response("create_hit_with_hit_type", hit_answer("HIT0"))
    services.batch_publish(batch=batch)
    _confirmed(stub, "ASG1", "WKR1")
    stub.add_client_error("create_worker_block", "ServiceFault", "try later")
    assignment = _submitted(batch, "ASG1", "WKR1", answer_words="dots", stub=stub, confirmed=None)
    assert CrowdWorker.objects.get(external_id="WKR1").blocked
    assert Annotation.objects.filter(assignment=assignment).exists()
