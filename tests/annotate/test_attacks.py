"""The crowd-side holes of the audit (issue 15), each reproduced as an attacker would: forged GET and POST
requests with the test client, a second browser, a replayed MTurk call. Each test failed before its fix."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore.stub import ANY, Stubber
from django.db import DatabaseError
from django.test import Client

from annotate import selectors, services
from annotate.errors import InvalidAnswer, ReviewError
from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Provider, Task
from annotate.providers import ProviderError
from annotate.selectors.comparison import batch_comparison_input
from tests.factories import png_bytes

Status = Assignment.Status
SANDBOX = "https://workersandbox.mturk.com"


# --- MTurk: the ids on the task page's URL are typed, not given ------------------------------------------


def _published_on_mturk(make_batch, stub: Stubber, **fields: Any) -> Batch:
    batch = make_batch(provider=Provider.MTURK, publish=False, **fields)
    stub.add_response("create_hit_type", {"HITTypeId": "TYPE1"})
    for task in batch.tasks.order_by("position"):
        stub.add_response("create_hit_with_hit_type", {"HIT": {"HITId": f"HIT{task.position}"}})
    services.batch_publish(batch=batch)
    return batch


def _frame(client: Client, task: Task, assignment_id: str, worker_id: str, hit_id: str | None = None):
    params = {
        "assignmentId": assignment_id,
        "hitId": task.mturk_hit_id if hit_id is None else hit_id,
        "workerId": worker_id,
        "turkSubmitTo": SANDBOX,
    }
    return client.get(f"/mturk/task/{task.public_id}/?{urlencode(params)}")


def _token(response) -> str | None:
    found = re.search(r'name="token" value="([^"]+)"', response.content.decode())
    return found[1] if found else None


def _no_record(stub: Stubber, assignment_id: str) -> None:
    """GetAssignment for an assignment MTurk has no submitted record of (every forged one, and a real one
    before its worker's externalSubmit)."""
    stub.add_client_error(
        "get_assignment",
        "RequestError",
        f"Assignment {assignment_id} does not exist. (1700000000000)",
        expected_params={"AssignmentId": assignment_id},
    )


def _record(assignment_id: str, worker_id: str, hit_id: str = "HIT0", status: str = "Submitted") -> dict:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "AssignmentId": assignment_id,
        "WorkerId": worker_id,
        "HITId": hit_id,
        "AssignmentStatus": status,
        "AcceptTime": when,
        "SubmitTime": when,
    }


def _sync(stub: Stubber, batch: Batch, records: list[dict]):
    for task in batch.tasks.order_by("position"):
        mine = [r for r in records if r["HITId"] == task.mturk_hit_id]
        stub.add_response(
            "list_assignments_for_hit",
            {"Assignments": mine, "NumResults": len(mine)},
            {"HITId": task.mturk_hit_id, "MaxResults": 100},
        )
    return services.batch_sync(batch=batch)


def test_forged_mturk_gets_never_push_a_real_worker_out(make_batch, stub: Stubber, answer) -> None:
    batch = _published_on_mturk(make_batch, stub)  # 2 assignments per HIT
    task = batch.tasks.get(position=0)
    real = Client()
    token = _token(_frame(real, task, "REALASG1", "REALWORKER1"))
    for n in range(2):
        assert _frame(Client(), task, f"FAKEASG{n}", f"FAKEWORKER{n}").status_code == 200
    mine = Assignment.objects.get(mturk_assignment_id="REALASG1")
    assert (mine.status, mine.verified) == (Status.ACCEPTED, False)
    assert not Assignment.objects.filter(status=Status.RETURNED).exists()
    # no forged arrival holds a real slot (below assignments_per_task), nor does the real one yet
    assert set(Assignment.objects.values_list("slot", flat=True)) == {2, 3, 4}
    _no_record(stub, "REALASG1")
    done = real.post(f"/mturk/task/{task.public_id}/submit/", {**answer(), "token": token})
    assert done.status_code == 200 and "externalSubmit" in done.content.decode()
    assert Annotation.objects.get().assignment.mturk_assignment_id == "REALASG1"


def test_a_real_workers_id_with_another_assignment_id_gets_no_token(make_batch, stub: Stubber) -> None:
    batch = _published_on_mturk(make_batch, stub)
    task = batch.tasks.get(position=0)
    assert _token(_frame(Client(), task, "REALASG1", "REALWORKER1"))
    stolen = _frame(Client(), task, "MADEUP1", "REALWORKER1")
    assert stolen.status_code == 409 and _token(stolen) is None
    swapped = _frame(Client(), task, "REALASG1", "SOMEONEELSE")
    assert swapped.status_code == 403 and _token(swapped) is None
    other_task = _frame(Client(), batch.tasks.get(position=1), "REALASG1", "REALWORKER1")
    assert other_task.status_code == 403 and _token(other_task) is None
    wrong_hit = _frame(Client(), task, "REALASG2", "REALWORKER2", hit_id="HIT1")
    assert wrong_hit.status_code == 403 and _token(wrong_hit) is None
    mine = Assignment.objects.get()
    assert (mine.mturk_assignment_id, mine.worker.external_id) == ("REALASG1", "REALWORKER1")
    assert not CrowdWorker.objects.filter(external_id="SOMEONEELSE").exists()


@pytest.mark.parametrize(
    "field,value",
    [
        ("assignmentId", "A" * 101),
        ("workerId", "W" * 101),
        ("hitId", "H" * 101),
        ("workerId", "<script>"),
        ("assignmentId", "ASG 1"),
    ],
)
def test_odd_or_overlong_mturk_ids_are_refused_before_the_database(
    make_batch, stub: Stubber, field: str, value: str
) -> None:
    task = _published_on_mturk(make_batch, stub).tasks.get(position=0)
    params = {"assignmentId": "ASG1", "hitId": "HIT0", "workerId": "WKR1", "turkSubmitTo": SANDBOX}
    response = Client().get(f"/mturk/task/{task.public_id}/?{urlencode({**params, field: value})}")
    assert response.status_code == 400
    assert f"{field} is not an MTurk id" in response.content.decode()
    assert not Assignment.objects.exists() and not CrowdWorker.objects.exists()


def _gold_answer_failed_in_the_frame(
    make_batch, units, stub: Stubber, answer, assignment_id: str, worker_id: str
) -> Batch:
    """A one-unit MTurk gold batch that blocks below 50 %, answered wrongly through MTurk's frame by
    `worker_id` under `assignment_id` (MTurk holding no record of it yet)."""
    batch = _published_on_mturk(
        make_batch,
        stub,
        units=units[:1],
        block_below_accuracy=0.5,
        block_min_gold=1,
        auto_reject_failed_gold=True,
        gold={units[0].pk: services.GoldAnswer("texture", ("stripes",))},
    )
    task = batch.tasks.get()
    client = Client()
    token = _token(_frame(client, task, assignment_id, worker_id))
    _no_record(stub, assignment_id)
    client.post(f"/mturk/task/{task.public_id}/submit/", {**answer(words="dots"), "token": token})
    return batch


def test_a_forged_worker_failing_gold_blocks_nobody_until_mturk_confirms(
    make_batch, units, stub: Stubber, answer
) -> None:
    batch = _gold_answer_failed_in_the_frame(make_batch, units, stub, answer, "FAKEASG", "AREALWORKERID")
    victim = CrowdWorker.objects.get(external_id="AREALWORKERID")
    assert not victim.blocked and (victim.gold_total, victim.gold_correct) == (0, 0)
    forged = Assignment.objects.get()
    assert (forged.status, forged.gold_passed, forged.verified) == (Status.SUBMITTED, None, False)
    # MTurk's record of the assignment names someone else: still unconfirmed, nothing scored
    result = _sync(stub, batch, [_record("FAKEASG", "ANOTHERWORKER")])
    assert result.mismatched == ["FAKEASG"] and result.verified == 0
    victim.refresh_from_db()
    assert not victim.blocked and victim.gold_total == 0


def test_gold_is_scored_and_the_worker_blocked_when_mturk_confirms(
    make_batch, units, stub: Stubber, answer
) -> None:
    batch = _gold_answer_failed_in_the_frame(make_batch, units, stub, answer, "ASG1", "WKR1")
    stub.add_response(
        "list_assignments_for_hit",
        {"Assignments": [_record("ASG1", "WKR1")]},
        {"HITId": "HIT0", "MaxResults": 100},
    )
    stub.add_response("create_worker_block", {}, {"WorkerId": "WKR1", "Reason": ANY})
    stub.add_response(
        "reject_assignment", {}, {"AssignmentId": "ASG1", "RequesterFeedback": services.AUTO_REJECT_FEEDBACK}
    )
    stub.add_response("create_additional_assignments_for_hit", {})
    result = services.batch_sync(batch=batch)
    assert (result.verified, result.pushed) == (1, 1)
    assignment = Assignment.objects.get()
    assert (assignment.verified, assignment.gold_passed, assignment.status, assignment.slot) == (
        True,
        False,
        Status.REJECTED,
        None,
    )
    worker = CrowdWorker.objects.get(external_id="WKR1")
    assert worker.blocked and (worker.gold_total, worker.gold_correct) == (1, 0)


def test_unconfirmed_answers_count_in_no_statistic_and_get_no_bonus(
    make_batch, stub: Stubber, answer, staff_client: Client
) -> None:
    batch = _published_on_mturk(make_batch, stub)
    task = batch.tasks.get(position=0)
    client = Client()
    token = _token(_frame(client, task, "ASG1", "WKR1"))
    _no_record(stub, "ASG1")
    client.post(f"/mturk/task/{task.public_id}/submit/", {**answer(words="red"), "token": token})
    progress = selectors.batch_progress(batch=batch)
    assert (progress.submitted, progress.in_progress, progress.unverified) == (0, 0, 1)
    records = batch_comparison_input(batch=batch).records
    assert all(not record.answers for record in records)
    assignment = Assignment.objects.get()
    with pytest.raises(ReviewError, match="not confirmed"):
        services.assignment_send_bonus(assignment=assignment, amount=Decimal("1.00"), reason="thanks")
    export = staff_client.get(f"/batches/{batch.public_id}/export.csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert [(row["worker"], row["verified"]) for row in rows] == [("WKR1", "False")]

    # MTurk's own record: the same worker on the same HIT; it counts from now on, in a real slot
    assert _sync(stub, batch, [_record("ASG1", "WKR1")]).verified == 1
    assignment.refresh_from_db()
    assert assignment.verified and assignment.slot == 0
    assert selectors.batch_progress(batch=batch).submitted == 1
    assert [a.words for r in batch_comparison_input(batch=batch).records for a in r.answers] == ["red"]


def test_a_bonus_paid_whose_save_failed_is_recorded_on_retry(
    make_batch, stub: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _published_on_mturk(make_batch, stub)
    task = batch.tasks.get(position=0)
    worker = services.crowd_worker_get_or_create(provider=Provider.MTURK, external_id="WKR1")
    assignment = services.assignment_accept(
        task=task, worker=worker, mturk_assignment_id="ASG1", mturk_hit_id="HIT0", turk_submit_to=SANDBOX
    )
    stub.add_response("get_assignment", {"Assignment": _record("ASG1", "WKR1")}, {"AssignmentId": "ASG1"})
    services.annotation_submit(assignment=assignment, words="red", category="color")
    token = f"bonus-{assignment.public_id.hex}"
    params = {
        "WorkerId": "WKR1",
        "BonusAmount": "0.50",
        "AssignmentId": "ASG1",
        "Reason": "Careful work",
        "UniqueRequestToken": token,
    }
    stub.add_response("send_bonus", {}, params)
    save = Assignment.save

    def failing_save(self: Assignment, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("update_fields") == ["bonus"]:
            raise DatabaseError("connection lost")
        save(self, *args, **kwargs)

    monkeypatch.setattr(Assignment, "save", failing_save)
    with pytest.raises(DatabaseError):
        services.assignment_send_bonus(assignment=assignment, amount=Decimal("0.5"), reason="Careful work")
    monkeypatch.setattr(Assignment, "save", save)
    assignment.refresh_from_db()
    assert assignment.bonus == 0  # paid on MTurk, not recorded here
    stub.add_client_error(
        "send_bonus",
        "RequestError",
        f'The idempotency token "{token}" has already been processed. (1700000000000)',
        expected_params=params,
    )
    services.assignment_send_bonus(assignment=assignment, amount=Decimal("0.5"), reason="Careful work")
    assignment.refresh_from_db()
    assert assignment.bonus == Decimal("0.50")


def test_other_bonus_errors_still_fail(make_batch, stub: Stubber) -> None:
    batch = _published_on_mturk(make_batch, stub)
    worker = services.crowd_worker_get_or_create(provider=Provider.MTURK, external_id="WKR1")
    assignment = services.assignment_accept(
        task=batch.tasks.get(position=0),
        worker=worker,
        mturk_assignment_id="ASG1",
        mturk_hit_id="HIT0",
        turk_submit_to=SANDBOX,
    )
    stub.add_response("get_assignment", {"Assignment": _record("ASG1", "WKR1")}, {"AssignmentId": "ASG1"})
    services.annotation_submit(assignment=assignment, words="red", category="color")
    stub.add_client_error("send_bonus", "RequestError", "Your account balance is insufficient.")
    with pytest.raises(ProviderError, match="insufficient"):
        services.assignment_send_bonus(assignment=assignment, amount=Decimal("0.5"), reason="Careful work")
    assignment.refresh_from_db()
    assert assignment.bonus == 0


# --- Prolific: no completion code for no work ------------------------------------------------------------


def test_a_made_up_prolific_id_without_answers_gets_no_completion_code(make_batch, units, answer) -> None:
    batch = make_batch(
        provider=Provider.PROLIFIC, prolific_completion_code="C0DE42", units=units[:1], assignments_per_task=1
    )
    holder = services.crowd_worker_get_or_create(provider=Provider.PROLIFIC, external_id="pid-holder")
    services.assignment_accept(task=batch.tasks.get(), worker=holder)
    forger = Client()
    arrived = forger.get(f"/w/{batch.public_id}/?PROLIFIC_PID=madeup1&STUDY_ID=s&SESSION_ID=x")
    assert arrived.status_code == 302
    page = forger.get(f"/w/{batch.public_id}/next/")
    html = page.content.decode()
    assert page.status_code == 200 and "C0DE42" not in html and "return your submission" in html
    assert not Assignment.objects.filter(worker__external_id="madeup1").exists()


# --- the local link: a typed name is a label, the personal link the key ----------------------------------


def _started(client: Client, batch: Batch, name: str) -> str:
    """Start on the batch link typing `name`; returns the personal link the start hands out."""
    response = client.post(f"/w/{batch.public_id}/", {"worker_id": name})
    assert response.status_code == 302 and "/me/" in response.url
    return response.url


def _take(client: Client, batch: Batch) -> Assignment:
    preview = client.get(f"/w/{batch.public_id}/next/")
    accepted = client.post(preview.url)
    return Assignment.objects.get(public_id=accepted.url.rstrip("/").split("/")[-1])


def test_typing_another_workers_id_opens_nothing_of_theirs(batch: Batch, answer) -> None:
    alice = Client()
    alice.get(_started(alice, batch, "alice"))
    hers = _take(alice, batch)
    mallory = Client()
    mallory.get(_started(mallory, batch, "alice"))
    assert mallory.get(f"/w/{batch.public_id}/next/").url != f"/w/a/{hers.public_id}/"
    assert mallory.get(f"/w/a/{hers.public_id}/").status_code == 404
    assert mallory.post(f"/w/a/{hers.public_id}/", answer()).status_code == 404
    assert mallory.post(f"/w/a/{hers.public_id}/return/").status_code == 404
    hers.refresh_from_db()
    assert hers.status == Status.ACCEPTED and not Annotation.objects.exists()
    two = CrowdWorker.objects.filter(label="alice")
    assert two.count() == 2 and len({w.external_id for w in two}) == 2
    assert all(re.fullmatch(r"worker-[0-9a-f]{16}", w.external_id) for w in two)


def test_the_personal_link_brings_a_worker_back_in_another_browser(batch: Batch, answer) -> None:
    first = Client()
    link = _started(first, batch, "alice")
    first.get(link)
    mine = _take(first, batch)
    page = first.get(f"/w/a/{mine.public_id}/").content.decode()
    assert "Bookmark your personal link to come back" in page and f"http://testserver{link}" in page
    second = Client()
    assert second.get(link).url == f"/w/{batch.public_id}/next/"
    assert second.get(f"/w/{batch.public_id}/next/").url == f"/w/a/{mine.public_id}/"
    assert second.post(f"/w/a/{mine.public_id}/", answer()).status_code == 302
    assert Annotation.objects.get().assignment == mine


def test_a_tampered_or_foreign_personal_link_logs_nobody_in(batch: Batch, make_batch) -> None:
    link = _started(Client(), batch, "alice")
    token = link.rstrip("/").split("/")[-1]
    other = make_batch(title="Another batch")
    for forged in (f"/w/{batch.public_id}/me/{token[:-2]}xx/", f"/w/{other.public_id}/me/{token}/"):
        client = Client()
        assert client.get(forged).status_code == 404
        assert client.get(f"/w/{batch.public_id}/next/").url == f"/w/{batch.public_id}/"


def test_review_and_export_show_the_typed_name_beside_the_id(
    batch: Batch, answer, staff_client: Client
) -> None:
    client = Client()
    client.get(_started(client, batch, "alice"))
    assignment = _take(client, batch)
    client.post(f"/w/a/{assignment.public_id}/", answer())
    worker = CrowdWorker.objects.get()
    review = staff_client.get(f"/batches/{batch.public_id}/review/").content.decode()
    assert f"{worker.external_id} (alice)" in review
    rows = list(
        csv.DictReader(
            io.StringIO(staff_client.get(f"/batches/{batch.public_id}/export.csv").content.decode())
        )
    )
    assert [(row["worker"], row["worker_label"]) for row in rows] == [(worker.external_id, "alice")]


# --- answers of one or two words --------------------------------------------------------------------------


def test_a_six_colour_answer_to_a_gold_unit_is_refused_at_submit(
    gold_batch: Batch, worker: CrowdWorker
) -> None:
    assignment = services.assignment_accept(task=gold_batch.tasks.get(is_gold=True), worker=worker)
    with pytest.raises(InvalidAnswer, match=r"Words: write one or two words \(you wrote 6\)\."):
        services.annotation_submit(
            assignment=assignment, words="red orange yellow green blue violet", category="color"
        )
    worker.refresh_from_db()
    assert not Annotation.objects.exists() and worker.gold_total == 0


@pytest.mark.parametrize("words,count", [("red orange yellow green blue violet", 6), ("red, blue, green", 3)])
def test_the_form_refuses_more_than_two_words(batch: Batch, start_worker, words: str, count: int) -> None:
    client = start_worker(batch, "alice")
    assignment = _take(client, batch)
    response = client.post(f"/w/a/{assignment.public_id}/", {"words": words, "category": "color"})
    assert response.status_code == 400
    assert f"Words: write one or two words (you wrote {count})." in response.content.decode()
    assert not Annotation.objects.exists()


# --- throttles ----------------------------------------------------------------------------------------------


@pytest.fixture
def frozen_throttle_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """django-ratelimit counts in windows of wall-clock time: frozen, a test never straddles two."""
    import django_ratelimit.core

    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))


@pytest.mark.usefixtures("frozen_throttle_clock")
def test_the_31st_start_in_a_minute_from_one_ip_is_a_429(batch: Batch) -> None:
    crowd = Client(REMOTE_ADDR="203.0.113.7")
    for n in range(30):
        assert crowd.post(f"/w/{batch.public_id}/", {"worker_id": f"w{n}"}).status_code == 302
    refused = crowd.post(f"/w/{batch.public_id}/", {"worker_id": "w30"})
    assert refused.status_code == 429 and "try again" in refused.content.decode()
    assert CrowdWorker.objects.count() == 30
    other = Client(REMOTE_ADDR="203.0.113.8")
    assert other.post(f"/w/{batch.public_id}/", {"worker_id": "neighbour"}).status_code == 302


@pytest.mark.usefixtures("frozen_throttle_clock")
def test_behind_a_proxy_each_forwarded_client_is_counted_apart(batch: Batch, settings) -> None:
    settings.PROXY_COUNT, settings.RATELIMIT_WORKER_CREATE = 1, "1/m"
    start = f"/w/{batch.public_id}/"
    first = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert first.post(start, {"worker_id": "a"}).status_code == 302
    assert first.post(start, {"worker_id": "b"}).status_code == 429
    # a forged left-hand entry does not make a new client: the proxy's own entry counts
    forged = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7")
    assert forged.post(start, {"worker_id": "c"}).status_code == 429
    second = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.8")
    assert second.post(start, {"worker_id": "d"}).status_code == 302


@pytest.mark.usefixtures("frozen_throttle_clock")
def test_prolific_arrivals_are_throttled(make_batch, settings) -> None:
    settings.RATELIMIT_WORKER_CREATE = "2/m"
    batch = make_batch(provider=Provider.PROLIFIC, prolific_completion_code="C0DE42")
    client = Client(REMOTE_ADDR="203.0.113.7")
    statuses = [
        client.get(f"/w/{batch.public_id}/?PROLIFIC_PID=p{n}&STUDY_ID=s&SESSION_ID=x").status_code
        for n in range(3)
    ]
    assert statuses == [302, 302, 429]
    assert CrowdWorker.objects.count() == 2


@pytest.mark.usefixtures("frozen_throttle_clock")
def test_taking_slots_is_throttled(make_batch, units, settings, stub: Stubber) -> None:
    settings.RATELIMIT_SLOT_TAKE = "2/m"
    batch = make_batch(units=units, assignments_per_task=3)
    client = Client(REMOTE_ADDR="203.0.113.7")
    client.get(_started(client, batch, "alice"))
    tasks = list(batch.tasks.order_by("position"))
    assert [client.post(f"/w/task/{task.public_id}/").status_code for task in tasks] == [302, 302, 429]
    assert Assignment.objects.count() == 2
    mturk_batch = _published_on_mturk(make_batch, stub, title="On MTurk")
    task = mturk_batch.tasks.get(position=0)
    frames = [
        _frame(Client(REMOTE_ADDR="203.0.113.9"), task, f"ASG{n}", f"W{n}").status_code for n in range(3)
    ]
    assert frames == [200, 200, 429]
    assert Assignment.objects.filter(task=task).count() == 2


# --- worker media: images by task and rank, nothing else ----------------------------------------------------


def test_worker_pages_show_images_by_task_and_rank_only(make_batch, start_worker, stub: Stubber) -> None:
    batch = make_batch(images_per_task=2)
    client = start_worker(batch, "alice")
    assignment = _take(client, batch)
    task = assignment.task
    expected = [f"/w/task/{task.public_id}/image/{rank}/" for rank in (0, 1)]
    mturk_task = _published_on_mturk(make_batch, stub, title="On MTurk", images_per_task=2).tasks.first()
    pages = [
        client.get(f"/w/task/{task.public_id}/"),
        client.get(f"/w/a/{assignment.public_id}/"),
        _frame(Client(), mturk_task, "ASG1", "WKR1"),
    ]
    for page, urls in zip(pages, (expected, expected, None), strict=True):
        html = page.content.decode()
        sources = re.findall(r'<img src="([^"]+)"', html)
        task_id = mturk_task.public_id if urls is None else task.public_id
        assert sources == (urls or [f"/w/task/{task_id}/image/{rank}/" for rank in (0, 1)])
        assert "/media/" not in html and "conv4" not in html and "units/" not in html


def test_a_task_image_is_the_image_and_nothing_more(make_batch) -> None:
    batch = make_batch(images_per_task=2)
    task = batch.tasks.get(position=0)
    response = Client().get(f"/w/task/{task.public_id}/image/1/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == png_bytes()
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "private, max-age=3600"
    assert "Content-Disposition" not in response
    assert all(task.unit.layer not in value and "units" not in value for _, value in response.items())


def test_only_the_ranks_a_task_shows_are_served(make_batch) -> None:
    batch = make_batch(images_per_task=2)  # the units have 4 images each
    task = batch.tasks.get(position=0)
    assert Client().get(f"/w/task/{task.public_id}/image/2/").status_code == 404
    assert Client().get(f"/w/task/{task.public_id}/image/99/").status_code == 404
    assert Client().get("/w/task/00000000-0000-4000-8000-000000000000/image/0/").status_code == 404


# --- nothing on a worker page names the unit's automatic label, concept category or gold answer -----------


def test_a_gold_label_task_never_names_the_label_category_or_gold_words(
    make_unit, make_batch, start_worker, answer, stub: Stubber
) -> None:
    secret = make_unit(7, label="zanzibarite", concept_category="quixoticness", iou=0.2)
    gold = {secret.pk: services.GoldAnswer("texture", ("xylophonist", "marmalade vortex"))}
    batch = make_batch(units=[secret], gold=gold)
    client = start_worker(batch, "alice")
    task = batch.tasks.get()
    assignment = _take(client, batch)
    mturk_batch = _published_on_mturk(make_batch, stub, title="On MTurk", units=[secret], gold=gold)
    mturk_task = mturk_batch.tasks.get()
    responses = [
        client.get(f"/w/{batch.public_id}/"),
        client.get(f"/w/task/{task.public_id}/"),
        client.get(f"/w/a/{assignment.public_id}/"),
        client.post(f"/w/a/{assignment.public_id}/", answer(words="", category="")),
        client.get(f"/w/task/{task.public_id}/image/0/"),
        Client().get(
            f"/mturk/task/{mturk_task.public_id}/?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=HIT0"
        ),
        _frame(Client(), mturk_task, "ASG1", "WKR1"),
    ]
    for response in responses:
        headers = " ".join(f"{k}: {v}" for k, v in response.items()).lower()
        body = b"" if response.streaming else response.content
        text = body.decode().lower() + headers
        for word in ("zanzibarite", "quixoticness", "xylophonist", "marmalade", "vortex", "gold"):
            assert word not in text, (word, response.request["PATH_INFO"])
