"""Prolific through its API, against a local fake of the endpoints (`prolific_fake`): the exact requests
sent, retries, failures shown with the call that failed, and nothing changed here unless Prolific did it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from annotate import selectors, services
from annotate.models import Assignment, Batch, BonusPayment, CrowdWorker, Provider
from annotate.providers import ProviderError
from annotate.services.prolific import prolific_batch_sync
from annotate.services.qualifications import (
    batch_qualifications_set,
    qualification_answer_submit,
    qualification_create,
)
from runs import services as runs_services
from runs.models import AuditEvent
from tests.annotate.prolific_fake import TOKEN, FakeProlific
from tests.factories import staff_user

Status = Assignment.Status
SITE = "https://annotate.example.org"
GROUP = "blocklist1"
SECRET = "hook-secret"
LONG_MESSAGE = (
    "Your answers to the control units did not match what the images show, so this submission cannot be "
    "accepted. Thank you for your time."
)


@pytest.fixture
def fake() -> Iterator[FakeProlific]:
    server = FakeProlific()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def connected(settings, fake: FakeProlific) -> FakeProlific:
    settings.PROLIFIC_API_TOKEN = TOKEN
    settings.PROLIFIC_API_URL = fake.url
    settings.PROLIFIC_TIMEOUT_S = 0.5
    settings.PROLIFIC_ATTEMPTS = 3
    settings.PROLIFIC_BACKOFF_S = 0
    settings.PROLIFIC_BLOCKLIST_GROUP_ID = GROUP
    settings.PROLIFIC_WEBHOOK_SECRET = SECRET
    settings.SITE_URL = SITE
    return fake


@pytest.fixture
def boss(django_user_model):
    return staff_user(django_user_model)


@pytest.fixture
def draft(make_batch, connected: FakeProlific) -> Batch:
    return make_batch(provider=Provider.PROLIFIC, prolific_completion_code="C0DE42", publish=False)


@pytest.fixture
def study(draft: Batch, boss) -> Batch:
    return services.batch_publish(batch=draft, actor=boss)


def _events(batch: Batch, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(batch_key=batch.public_id, action=action))


@pytest.fixture
def participate(connected: FakeProlific) -> Callable[..., list[Assignment]]:
    """A participant who took every task of the study (answering them unless `answer` is False) and whose
    submission Prolific holds with `status`."""

    def make(batch: Batch, pid: str, session: str, status: str = "AWAITING REVIEW", answer: bool = True):
        worker = services.crowd_worker_get_or_create(provider=Provider.PROLIFIC, external_id=pid)
        taken = []
        for task in batch.tasks.order_by("position"):
            assignment = services.assignment_accept(
                task=task,
                worker=worker,
                prolific_session_id=session,
                prolific_study_id=batch.prolific_study_id,
            )
            if answer:
                services.annotation_submit(assignment=assignment, words="red", category="color")
            taken.append(assignment)
        connected.add_submission(session, pid, batch.prolific_study_id, status)
        return taken

    return make


def test_publish_creates_the_draft_study_then_publishes_it(study: Batch, connected: FakeProlific) -> None:
    create, publish = connected.requests
    assert (create.method, create.path) == ("POST", "studies/")
    assert create.body == {
        "name": "Label units",
        "internal_name": f"unitscope batch {study.public_id}",
        "description": "Label units",
        "external_study_url": (
            f"{SITE}/w/{study.public_id}/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}"
            "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
        ),
        "prolific_id_option": "url_parameters",
        "completion_codes": [
            {"code": "C0DE42", "code_type": "COMPLETED", "actions": [{"action": "MANUALLY_REVIEW"}]}
        ],
        "total_available_places": 2,
        "estimated_completion_time": 3,
        "maximum_allowed_time": 30,
        "reward": 30,
        "device_compatibility": ["desktop"],
    }
    assert (publish.method, publish.path, publish.body) == (
        "POST",
        "studies/study1/transition/",
        {"action": "PUBLISH"},
    )
    assert {r.authorization for r in connected.requests} == {f"Token {TOKEN}"}
    assert (study.prolific_study_id, study.prolific_study_status, study.state) == (
        "study1",
        "ACTIVE",
        "published",
    )
    (event,) = _events(study, "publish")
    assert event.actor_name == "boss" and event.provider_reply["status"] == "ACTIVE"


def test_pause_resume_and_cancel_transition_the_study(study: Batch, connected: FakeProlific, boss) -> None:
    services.batch_pause(batch=study, actor=boss)
    assert connected.studies["study1"]["status"] == "PAUSED"
    services.batch_publish(batch=study, actor=boss)
    services.batch_cancel(batch=study, actor=boss)
    actions = [r.body["action"] for r in connected.calls("POST", r"studies/study1/transition/")]
    assert actions == ["PUBLISH", "PAUSE", "START", "STOP"]
    assert len(connected.calls("POST", "studies/")) == 1, "resuming never makes a second study"
    assert connected.studies["study1"]["status"] == "AWAITING REVIEW"
    study.refresh_from_db()
    assert study.state == Batch.State.CANCELLED
    assert [len(_events(study, a)) for a in ("publish", "pause", "cancel")] == [2, 1, 1]


def test_rate_limits_server_errors_and_timeouts_are_retried(draft: Batch, connected: FakeProlific) -> None:
    connected.fail("POST", r"studies/.*/transition/", "429")
    connected.fail("POST", r"studies/.*/transition/", "500")
    services.batch_publish(batch=draft)
    assert len(connected.calls("POST", r"studies/study1/transition/")) == 3
    services.batch_pause(batch=draft)
    connected.fail("POST", r"studies/.*/transition/", "hang")
    services.batch_publish(batch=draft)
    assert [r.body["action"] for r in connected.calls("POST", r"studies/study1/transition/")][-2:] == [
        "START",
        "START",
    ]
    assert draft.state == Batch.State.PUBLISHED


def test_a_failure_after_every_attempt_names_the_call_and_changes_nothing(
    draft: Batch, connected: FakeProlific
) -> None:
    connected.fail("POST", r"studies/.*/transition/", "500", times=3)
    with pytest.raises(
        ProviderError, match=r"Prolific POST /studies/study1/transition/ failed after 3 attempts: 500"
    ):
        services.batch_publish(batch=draft)
    draft.refresh_from_db()
    assert draft.state == Batch.State.DRAFT
    assert draft.prolific_study_id == "study1", "the draft is kept, so a retry publishes it"
    assert not AuditEvent.objects.exists()
    services.batch_publish(batch=draft)
    assert len(connected.calls("POST", "studies/")) == 1


def test_creating_a_study_is_not_repeated_after_a_timeout(draft: Batch, connected: FakeProlific) -> None:
    connected.fail("POST", "studies/", "slow")
    with pytest.raises(ProviderError, match=r"Prolific POST /studies/ failed: no answer within 0.5 s"):
        services.batch_publish(batch=draft)
    assert len(connected.calls("POST", "studies/")) == 1
    draft.refresh_from_db()
    assert (draft.state, draft.prolific_study_id) == (Batch.State.DRAFT, "")


def test_approve_and_reject_transition_the_participants_submission(
    study: Batch, participate, connected: FakeProlific, boss
) -> None:
    first = participate(study, "pid1", "sub1")
    second = participate(study, "pid2", "sub2")
    services.assignment_approve(assignment=first[0], actor=boss)
    services.assignment_approve(assignment=first[1], actor=boss)
    services.assignment_reject(
        assignment=second[0], feedback=LONG_MESSAGE, category="FAILED_CHECK", actor=boss
    )
    sent = [(r.path, r.body) for r in connected.calls("POST", r"submissions/.*/transition/")]
    assert sent == [
        ("submissions/sub1/transition/", {"action": "APPROVE"}),
        ("submissions/sub1/transition/", {"action": "APPROVE"}),
        (
            "submissions/sub2/transition/",
            {"action": "REJECT", "message": LONG_MESSAGE, "rejection_category": "FAILED_CHECK"},
        ),
    ]
    assert connected.submissions["sub1"]["status"] == "APPROVED"
    assert connected.submissions["sub2"]["status"] == "REJECTED"
    assert [
        a.status for a in Assignment.objects.filter(pk__in=[first[0].pk, second[0].pk]).order_by("pk")
    ] == [
        Status.APPROVED,
        Status.REJECTED,
    ]
    assert len(_events(study, "approve")) == 2 and len(_events(study, "reject")) == 1


def test_a_rejection_prolific_would_refuse_is_not_sent_and_changes_nothing(
    study: Batch, participate, connected: FakeProlific
) -> None:
    (assignment, *_) = participate(study, "pid1", "sub1")
    with pytest.raises(ProviderError, match="at least 100 characters"):
        services.assignment_reject(assignment=assignment, feedback="Wrong.", category="LOW_EFFORT")
    with pytest.raises(ProviderError, match="rejection category"):
        services.assignment_reject(assignment=assignment, feedback=LONG_MESSAGE)
    approved, other = participate(study, "pid2", "sub2")[:2]
    services.assignment_approve(assignment=approved)
    with pytest.raises(ProviderError, match="400 Cannot REJECT a submission that is APPROVED"):
        services.assignment_reject(assignment=other, feedback=LONG_MESSAGE, category="LOW_EFFORT")
    assert Assignment.objects.get(pk=assignment.pk).status == Status.SUBMITTED
    assert Assignment.objects.get(pk=other.pk).status == Status.SUBMITTED
    assert not connected.calls("POST", r"submissions/sub1/transition/")
    assert not _events(study, "reject")


def test_bulk_approve_approves_what_prolific_approved_and_lists_the_rest(
    study: Batch, participate, connected: FakeProlific, boss
) -> None:
    done = participate(study, "pid1", "sub1")
    working = participate(study, "pid2", "sub2", status="ACTIVE")
    connected.bulk_refuses.add("sub1")
    outcome = services.assignments_review(
        assignments=[done[0], done[1], working[0]], action="approve", actor=boss
    )
    (bulk,) = connected.calls("POST", "submissions/bulk-approve/")
    assert bulk.body == {"submission_ids": ["sub1", "sub2"]}
    assert outcome.done == 0
    assert len(outcome.queued) == 2 and all(
        "sub1" in line and "AWAITING REVIEW" in line for line in outcome.queued
    )
    assert len(outcome.errors) == 1 and "sub2" in outcome.errors[0] and "ACTIVE" in outcome.errors[0]
    assert set(
        Assignment.objects.filter(prolific_session_id__in=["sub1", "sub2"]).values_list("status", flat=True)
    ) == {Status.SUBMITTED}
    connected.bulk_refuses.clear()
    outcome = services.assignments_review(assignments=done, action="approve", actor=boss)
    assert (outcome.done, outcome.errors, outcome.queued) == (3, [], [])
    assert set(Assignment.objects.filter(prolific_session_id="sub1").values_list("status", flat=True)) == {
        Status.APPROVED
    }
    assert len(_events(study, "approve")) == 3


def test_through_the_api_a_bulk_approve_lists_what_prolific_has_not_approved_yet(
    study: Batch, participate, connected: FakeProlific, boss
) -> None:
    done = participate(study, "pid1", "sub1")
    connected.bulk_refuses.add("sub1")
    key = runs_services.api_token_create(user=boss, name="tests")[1]
    response = Client(headers={"Authorization": f"Bearer {key}"}).post(
        f"/api/batches/{study.public_id}/review",
        {"action": "approve", "assignments": [str(a.public_id) for a in done[:2]]},
        content_type="application/json",
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["done"], body["errors"], len(body["queued"])) == (0, [], 2)
    assert all("sub1" in line and "the next sync records it" in line for line in body["queued"])
    assert [r.body for r in connected.calls("POST", "submissions/bulk-approve/")] == [
        {"submission_ids": ["sub1"]}
    ]
    assert not _events(study, "approve")


def test_a_bonus_retried_after_a_timeout_is_paid_once(
    study: Batch, participate, connected: FakeProlific, boss
) -> None:
    (assignment, *_) = participate(study, "pid1", "sub1")
    connected.fail("POST", r"bulk-bonus-payments/.*/pay/", "slow")
    with pytest.raises(
        ProviderError, match=r"POST /bulk-bonus-payments/bonus2/pay/ failed: no answer.*never sent again"
    ):
        services.assignment_send_bonus(
            assignment=assignment, amount=Decimal("0.25"), reason="Careful work", actor=boss
        )
    payment = BonusPayment.objects.get(assignment=assignment)
    assert (payment.state, payment.provider_ref) == (BonusPayment.State.PAYING, "bonus2")
    assert Assignment.objects.get(pk=assignment.pk).bonus == 0
    assert not _events(study, "bonus")
    setup = connected.calls("POST", "submissions/bonus-payments/")
    assert [r.body for r in setup] == [{"study_id": "study1", "csv_bonuses": "sub1,0.25"}]

    services.assignment_send_bonus(
        assignment=assignment, amount=Decimal("0.25"), reason="Careful work", actor=boss
    )
    assert connected.bonus_setups["bonus2"]["pays"] == 1
    assert len(connected.calls("POST", r"bulk-bonus-payments/.*/pay/")) == 1
    assert len(connected.calls("POST", "submissions/bonus-payments/")) == 1
    assert connected.submissions["sub1"]["bonus_payments"] == [25]
    assert Assignment.objects.get(pk=assignment.pk).bonus == Decimal("0.25")
    assert BonusPayment.objects.get(assignment=assignment).state == BonusPayment.State.PAID
    (event,) = _events(study, "bonus")
    assert event.details == {
        "amount": "0.25",
        "reason": "Careful work",
        "assignment": str(assignment.public_id),
    }


def test_a_bonus_whose_pay_call_was_refused_is_paid_on_retry(
    study: Batch, participate, connected: FakeProlific
) -> None:
    (assignment, *_) = participate(study, "pid1", "sub1")
    connected.fail("POST", r"bulk-bonus-payments/.*/pay/", "429", times=3)
    with pytest.raises(ProviderError, match="failed after 3 attempts: 429"):
        services.assignment_send_bonus(assignment=assignment, amount=Decimal("0.25"), reason="Thanks")
    assert BonusPayment.objects.get(assignment=assignment).state == BonusPayment.State.SET_UP
    services.assignment_send_bonus(assignment=assignment, amount=Decimal("0.25"), reason="Thanks")
    assert connected.submissions["sub1"]["bonus_payments"] == [25]
    assert len(connected.calls("POST", "submissions/bonus-payments/")) == 1


def test_bonuses_in_bulk_are_one_set_up_and_one_pay_call_per_round(
    study: Batch, participate, connected: FakeProlific, boss
) -> None:
    first = participate(study, "pid1", "sub1")
    second = participate(study, "pid2", "sub2")
    chosen = [first[0], first[1], second[0]]
    connected.fail("POST", r"bulk-bonus-payments/.*/pay/", "429", times=3)
    refused = services.assignments_review(
        assignments=chosen, action="bonus", amount=Decimal("0.10"), feedback="Careful work", actor=boss
    )
    assert refused.done == 0 and len(refused.errors) == 3
    assert all("failed after 3 attempts: 429" in error for error in refused.errors)
    assert set(BonusPayment.objects.values_list("state", "provider_ref")) == {
        (BonusPayment.State.PENDING, "")
    }

    outcome = services.assignments_review(
        assignments=chosen, action="bonus", amount=Decimal("0.10"), feedback="Careful work", actor=boss
    )
    assert (outcome.done, outcome.errors) == (3, [])
    setups = [r.body for r in connected.calls("POST", "submissions/bonus-payments/")]
    assert setups == [
        {"study_id": "study1", "csv_bonuses": "sub1,0.10\nsub2,0.10"},
        {"study_id": "study1", "csv_bonuses": "sub1,0.10\nsub2,0.10"},
        {"study_id": "study1", "csv_bonuses": "sub1,0.10"},
    ], "a refused pay call's set-up is never paid; a participant's second answer goes in the next round"
    paid = [r.path for r in connected.calls("POST", r"bulk-bonus-payments/.*/pay/")]
    assert paid == ["bulk-bonus-payments/bonus2/pay/"] * 3 + [
        "bulk-bonus-payments/bonus3/pay/",
        "bulk-bonus-payments/bonus4/pay/",
    ]
    assert connected.bonus_setups["bonus2"]["pays"] == 0
    assert (
        connected.submissions["sub1"]["bonus_payments"],
        connected.submissions["sub2"]["bonus_payments"],
    ) == (
        [10, 10],
        [10],
    )
    assert {a.bonus for a in Assignment.objects.filter(pk__in=[a.pk for a in chosen])} == {Decimal("0.10")}
    assert set(BonusPayment.objects.values_list("state", flat=True)) == {BonusPayment.State.PAID}
    events = _events(study, "bonus")
    assert len(events) == 3 and all(e.details["bulk"] is True for e in events)
    assert sorted(e.provider_reply.split()[5] for e in events) == ["bonus3", "bonus3", "bonus4"]


def test_a_bulk_bonus_whose_pay_call_timed_out_is_paid_once(
    study: Batch, participate, connected: FakeProlific, boss
) -> None:
    chosen = [participate(study, "pid1", "sub1")[0], participate(study, "pid2", "sub2")[0]]
    connected.fail("POST", r"bulk-bonus-payments/.*/pay/", "slow")
    outcome = services.assignments_review(
        assignments=chosen, action="bonus", amount=Decimal("0.25"), feedback="Careful work", actor=boss
    )
    assert outcome.done == 0 and len(outcome.errors) == 2
    assert all("no answer" in e and "never sent again" in e for e in outcome.errors)
    assert set(BonusPayment.objects.values_list("state", "provider_ref")) == {
        (BonusPayment.State.PAYING, "bonus2")
    }
    assert not _events(study, "bonus")

    again = services.assignments_review(
        assignments=chosen, action="bonus", amount=Decimal("0.25"), feedback="Careful work", actor=boss
    )
    assert (again.done, again.errors) == (2, [])
    assert len(connected.calls("POST", r"bulk-bonus-payments/.*/pay/")) == 1
    assert len(connected.calls("POST", "submissions/bonus-payments/")) == 1
    assert connected.bonus_setups["bonus2"]["pays"] == 1
    assert (
        connected.submissions["sub1"]["bonus_payments"]
        == connected.submissions["sub2"]["bonus_payments"]
        == [25]
    )
    assert set(BonusPayment.objects.values_list("state", flat=True)) == {BonusPayment.State.PAID}
    assert len(_events(study, "bonus")) == 2


def test_block_adds_the_participant_to_the_blocklist_group(
    study: Batch, participate, connected: FakeProlific, boss, settings
) -> None:
    participate(study, "pid1", "sub1")
    worker = CrowdWorker.objects.get(external_id="pid1")
    settings.PROLIFIC_BLOCKLIST_GROUP_ID = ""
    with pytest.raises(ProviderError, match="PROLIFIC_BLOCKLIST_GROUP_ID"):
        services.crowd_worker_block(worker=worker, reason="Spam", actor=boss, batch=study)
    assert not CrowdWorker.objects.get(pk=worker.pk).blocked
    settings.PROLIFIC_BLOCKLIST_GROUP_ID = GROUP
    services.crowd_worker_block(worker=worker, reason="Spam", actor=boss, batch=study)
    (call,) = connected.calls("POST", r"participant-groups/.*")
    assert (call.path, call.body) == (
        f"participant-groups/{GROUP}/participants/",
        {"participant_ids": ["pid1"]},
    )
    assert connected.groups[GROUP] == {"pid1"}
    assert CrowdWorker.objects.get(pk=worker.pk).blocked
    assert len(_events(study, "block")) == 1
    services.crowd_worker_unblock(worker=worker, actor=boss)
    (call,) = connected.calls("DELETE", r"participant-groups/.*")
    assert (call.path, call.body) == (
        f"participant-groups/{GROUP}/participants/",
        {"participant_ids": ["pid1"]},
    )
    assert connected.groups[GROUP] == set()
    assert not CrowdWorker.objects.get(pk=worker.pk).blocked
    (unblocked,) = _events(study, "unblock")
    assert unblocked.actor_name == "boss" and unblocked.details == {"reason_was": "Spam"}


def test_participants_who_pass_a_qualification_join_its_participant_group(
    study: Batch, units, connected: FakeProlific, participate
) -> None:
    qualification = qualification_create(
        project=study.project,
        name="Screen",
        gold={units[0].pk: services.GoldAnswer("color", ("red",))},
        min_accuracy=1.0,
        min_items=1,
        prolific_group_id="passers1",
    )
    batch_qualifications_set(batch=study, qualifications=[qualification])
    (item,) = qualification.items.all()
    for pid, words in (("pid1", "red"), ("pid2", "blue")):
        worker = services.crowd_worker_get_or_create(provider=Provider.PROLIFIC, external_id=pid)
        qualification_answer_submit(
            qualification=qualification, worker=worker, item=item, words=words, category="color"
        )
    participate(study, "pid1", "sub1")
    prolific_batch_sync(batch=study)
    (call,) = connected.calls("POST", r"participant-groups/.*")
    assert (call.path, call.body) == (
        "participant-groups/passers1/participants/",
        {"participant_ids": ["pid1"]},
    )
    assert connected.groups["passers1"] == {"pid1"}
    connected.fail("POST", r"participant-groups/.*", "500", times=3)
    with pytest.raises(
        ProviderError, match=r"POST /participant-groups/passers1/participants/ failed after 3 attempts: 500"
    ):
        prolific_batch_sync(batch=study)


def test_sync_frees_the_slots_of_returned_and_timed_out_submissions(
    make_batch, connected: FakeProlific, participate
) -> None:
    batch = make_batch(provider=Provider.PROLIFIC, prolific_completion_code="C0DE42", assignments_per_task=4)
    returned = participate(batch, "pid1", "sub1")
    timed_out = participate(batch, "pid2", "sub2", answer=False)
    elsewhere_ok = participate(batch, "pid3", "sub3")
    elsewhere_no = participate(batch, "pid4", "sub4")
    for session, status in (
        ("sub1", "RETURNED"),
        ("sub2", "TIMED-OUT"),
        ("sub3", "APPROVED"),
        ("sub4", "REJECTED"),
    ):
        connected.submissions[session]["status"] = status
    connected.add_submission("stranger", "pid9", batch.prolific_study_id, "ACTIVE")
    newcomer = services.crowd_worker_get_or_create(provider=Provider.PROLIFIC, external_id="pid5")
    assert not selectors.tasks_open_for_worker(batch=batch, worker=newcomer).exists()

    result = services.batch_sync(batch=batch)

    def statuses(assignments: list[Assignment]) -> set[tuple[str, int | None]]:
        return {(a.status, a.slot) for a in Assignment.objects.filter(pk__in=[x.pk for x in assignments])}

    assert statuses(returned) == {(Status.RETURNED, None)}
    assert statuses(timed_out) == {(Status.EXPIRED, None)}
    assert {status for status, _ in statuses(elsewhere_ok)} == {Status.APPROVED}
    assert statuses(elsewhere_no) == {(Status.REJECTED, None)}
    assert (result.seen, result.updated, result.unknown) == (5, 12, ["stranger"])
    assert selectors.tasks_open_for_worker(batch=batch, worker=newcomer).count() == 3
    listed = connected.calls("GET", "submissions/")
    assert [r.query for r in listed] == [{"study": "study1", "page": "1", "page_size": "100"}]


def test_a_study_stopped_in_prolific_stops_the_batch_here(
    study: Batch, connected: FakeProlific, boss
) -> None:
    connected.studies["study1"]["status"] = "AWAITING REVIEW"
    prolific_batch_sync(batch=study)
    study.refresh_from_db()
    assert (study.state, study.prolific_study_status) == (Batch.State.PAUSED, "AWAITING REVIEW")
    transitions = len(connected.calls("POST", r"studies/.*/transition/"))
    with pytest.raises(ProviderError, match="is stopped"):
        services.batch_publish(batch=study, actor=boss)
    assert len(connected.calls("POST", r"studies/.*/transition/")) == transitions
    services.batch_cancel(batch=study, actor=boss)
    assert len(connected.calls("POST", r"studies/.*/transition/")) == transitions, "nothing left to stop"


def _signed(body: dict, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    raw = json.dumps(body)
    timestamp = str(int(at if at is not None else time.time()))
    digest = hmac.new(secret.encode(), (timestamp + raw).encode(), hashlib.sha256).digest()
    return {
        "data": raw,
        "content_type": "application/json",
        "HTTP_X_PROLIFIC_REQUEST_SIGNATURE": base64.b64encode(digest).decode(),
        "HTTP_X_PROLIFIC_REQUEST_TIMESTAMP": timestamp,
    }


def test_the_webhook_applies_signed_submission_and_study_events(
    study: Batch, participate, connected: FakeProlific
) -> None:
    taken = participate(study, "pid1", "sub1", answer=False)
    calls = len(connected.requests)
    event = {
        "resource_id": "sub1",
        "event_type": "submission.status.change",
        "participant_id": "pid1",
        "status": "RETURNED",
    }
    client = Client()
    for bad in (_signed(event, secret="guess"), _signed(event, at=time.time() - 3600)):
        assert client.post("/prolific/webhook/", **bad).status_code == 403
    assert {a.status for a in Assignment.objects.filter(pk__in=[a.pk for a in taken])} == {Status.ACCEPTED}
    response = client.post("/prolific/webhook/", **_signed(event))
    assert response.status_code == 200 and response.json() == {"updated": 3, "unknown": []}
    assert {(a.status, a.slot) for a in Assignment.objects.filter(pk__in=[a.pk for a in taken])} == {
        (Status.RETURNED, None)
    }
    study_event = {"resource_id": "study1", "event_type": "study.status.change", "status": "PAUSED"}
    assert client.post("/prolific/webhook/", **_signed(study_event)).json() == {"known": True}
    study.refresh_from_db()
    assert study.state == Batch.State.PAUSED
    assert len(connected.requests) == calls, "a webhook is applied without calling Prolific"


def test_the_poll_command_syncs_every_open_study_and_reports_failures(
    study: Batch, participate, connected: FakeProlific, capsys
) -> None:
    participate(study, "pid1", "sub1", answer=False)
    connected.submissions["sub1"]["status"] = "TIMED-OUT"
    call_command("sync_prolific")
    assert "1 submission(s) seen, 3 assignment(s) updated" in capsys.readouterr().out
    connected.fail("GET", r"studies/study1/", "500", times=3)
    with pytest.raises(CommandError, match="1 of 1"):
        call_command("sync_prolific")
    assert "GET /studies/study1/ failed after 3 attempts" in capsys.readouterr().err


def test_without_a_token_nothing_is_called(make_batch, fake: FakeProlific, settings) -> None:
    settings.PROLIFIC_API_TOKEN = ""
    settings.PROLIFIC_API_URL = fake.url
    batch = make_batch(provider=Provider.PROLIFIC, prolific_completion_code="C0DE42")
    services.batch_pause(batch=batch)
    services.batch_cancel(batch=batch)
    assert batch.prolific_study_id == "" and fake.requests == []
