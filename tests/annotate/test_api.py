"""The REST API's crowd side: batches made from a run's units through the New batch page's form (the same
checks and messages), published, paused and cancelled through the services; assignments listed, approved,
rejected, paid and blocked; the export and the comparison summary equal to the pages' downloads. Another
project's batches and assignments are 404 with nothing changed; a crowd worker has no way in."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from annotate import services
from annotate.models import Assignment, Batch, CrowdWorker, Provider
from runs import services as runs
from runs.models import DissectionRun, Project, Unit
from tests.factories import logged_in, run_create, staff_user, unit_create

Status = Assignment.Status


def bearer(key: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def boss(django_user_model: Any) -> Any:
    return staff_user(django_user_model)


@pytest.fixture
def api(boss: Any) -> Client:
    return bearer(runs.api_token_create(user=boss, name="tests")[1])


@pytest.fixture
def page(boss: Any) -> Client:
    """The same requester on the pages."""
    return logged_in(boss)


@pytest.fixture
def other_project(db: None) -> Project:
    return Project.objects.create(name="Other lab")


@pytest.fixture
def intruder(django_user_model: Any, other_project: Project) -> Client:
    """A requester of another project with a run and a batch of their own, and a token."""
    user = staff_user(django_user_model, "intruder", project=other_project)
    run = run_create("other run", project=other_project, status=DissectionRun.Status.DONE, layers=["conv4"])
    units = [unit_create(run, channel, label=f"other{channel}") for channel in range(2)]
    services.batch_create(title="Other lab's batch", units=units, created_by=user)
    return bearer(runs.api_token_create(user=user, name="theirs")[1])


def _submitted(batch: Batch, worker_id: str, position: int = 0, words: str = "red") -> Assignment:
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=worker_id)
    assignment = services.assignment_accept(task=batch.tasks.get(position=position), worker=worker)
    services.annotation_submit(assignment=assignment, words=words, category="color", rejected_ranks=[])
    return assignment


def _new_batch(run: DissectionRun, **fields: Any) -> dict[str, Any]:
    return {
        "title": "Layer 4 by API",
        "run": run.pk,
        "layer": "conv4",
        "selection": "all",
        "assignments_per_task": 2,
        "images_per_task": 4,
        "reward": "0.05",
        "assignment_minutes": 20,
        "lifetime_hours": 24,
        **fields,
    }


def _post(client: Client, path: str, payload: Any = None) -> Any:
    return client.post(path, payload or {}, content_type="application/json")


# --- batches -----------------------------------------------------------------------------------------------


def test_a_batch_is_made_from_a_runs_units_with_gold(api: Client, boss: Any, units: list[Unit]) -> None:
    payload = _new_batch(
        units[0].run,
        selection="list",
        units=[1, 3],
        gold=[{"unit": 2, "category": "texture", "words": ["stripes", "striped"]}],
        block_below_percent=50,
    )
    response = _post(api, "/api/batches", payload)
    assert response.status_code == 201, response.content
    body = response.json()
    batch = Batch.objects.get(title="Layer 4 by API")
    assert body["id"] == str(batch.public_id) and body["state"] == "draft" and body["task_count"] == 3
    assert body["progress"]["required"] == 6 and body["assignment_minutes"] == 20
    assert body["worker_url"].endswith(f"/w/{batch.public_id}/")
    assert batch.created_by == boss and batch.block_below_accuracy == 0.5 and batch.reward == Decimal("0.05")
    assert list(batch.tasks.values_list("unit__channel", "is_gold", "gold_words")) == [
        (0, False, []),
        (2, False, []),
        (1, True, ["stripes", "striped"]),
    ]
    assert api.get(f"/api/batches/{batch.public_id}").json() == body
    assert [b["title"] for b in api.get("/api/batches").json()["items"]] == ["Layer 4 by API"]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"layer": "conv9"}, "Layer: run 'test run' has no units in layer 'conv9'."),
        ({"selection": "list", "units": [1, 8]}, "Units: layer 'conv4' has no unit 8."),
        ({"selection": "sample", "sample_size": 9}, "Sample size: choose between 1 and 3 units."),
        ({"selection": "most"}, "Selection: Select a valid choice."),
        (
            {"gold": [{"unit": 1, "category": "animal", "words": ["cat"]}]},
            "Gold units: Gold units, line 1: category",
        ),
        ({"gold": [{"unit": 1, "category": "color", "words": ["red; blue"]}]}, "Gold units, entry 1: no ';'"),
        (
            {"provider": "prolific"},
            "Prolific completion code: A Prolific batch needs the study's completion code.",
        ),
        ({"reward": "-1"}, "Reward per assignment (USD): Ensure this value is greater than or equal to 0."),
        ({"title": " "}, "Title: This field is required."),
    ],
)
def test_a_bad_batch_is_400_with_the_pages_message_and_stores_nothing(
    api: Client, units: list[Unit], changes: dict[str, Any], message: str
) -> None:
    response = _post(api, "/api/batches", _new_batch(units[0].run, **changes))
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(message), response.json()
    assert not Batch.objects.exists()


def test_a_malformed_batch_is_422_naming_the_field(api: Client, units: list[Unit]) -> None:
    response = _post(api, "/api/batches", _new_batch(units[0].run, assignments_per_task="many"))
    assert response.status_code == 422
    assert response.json()["detail"].startswith("assignments_per_task: ")
    response = _post(api, "/api/batches", {"title": "no run"})
    assert response.status_code == 422 and "run: Field required" in response.json()["detail"]
    assert not Batch.objects.exists()


def test_publish_pause_and_cancel_follow_the_services_rules(
    api: Client, make_batch: Callable[..., Batch]
) -> None:
    batch = make_batch(publish=False)
    path = f"/api/batches/{batch.public_id}"
    assert _post(api, f"{path}/pause").json() == {"detail": "Only a published batch can be paused."}
    response = _post(api, f"{path}/publish")
    assert response.status_code == 200 and response.json()["state"] == "published"
    assert response.json()["expires_at"] is not None
    again = _post(api, f"{path}/publish")
    assert again.status_code == 400 and again.json() == {"detail": "A published batch cannot be published."}
    assert _post(api, f"{path}/pause").json()["state"] == "paused"
    assert _post(api, f"{path}/publish").json()["state"] == "published"
    assert _post(api, f"{path}/cancel").json()["state"] == "cancelled"
    assert _post(api, f"{path}/cancel").json() == {"detail": "This batch is already cancelled."}
    batch.refresh_from_db()
    assert batch.state == Batch.State.CANCELLED


def test_progress_and_the_assignments_with_their_answers(api: Client, batch: Batch) -> None:
    first = _submitted(batch, "alice", 0, "red")
    _submitted(batch, "bob", 1, "sky")
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id="carol")
    services.assignment_accept(task=batch.tasks.get(position=2), worker=worker)
    progress = api.get(f"/api/batches/{batch.public_id}/progress").json()
    assert progress == {
        "required": 6,
        "submitted": 2,
        "approved": 0,
        "rejected": 0,
        "in_progress": 1,
        "unverified": 0,
    }
    listing = api.get(f"/api/batches/{batch.public_id}/assignments").json()
    assert listing["count"] == 3
    assert [
        (a["worker"]["external_id"], a["status"], a["words"], a["unit"], a["channel"])
        for a in listing["items"]
    ] == [
        ("alice", "submitted", "red", 1, 0),
        ("bob", "submitted", "sky", 2, 1),
        ("carol", "accepted", None, 3, 2),
    ]
    assert listing["items"][0]["id"] == str(first.public_id) and listing["items"][0]["category"] == "color"
    accepted = api.get(f"/api/batches/{batch.public_id}/assignments?status=accepted").json()
    assert [a["worker"]["external_id"] for a in accepted["items"]] == ["carol"]
    paged = api.get(f"/api/batches/{batch.public_id}/assignments?limit=1&offset=1").json()
    assert paged["count"] == 3 and [a["worker"]["external_id"] for a in paged["items"]] == ["bob"]
    bad = api.get(f"/api/batches/{batch.public_id}/assignments?status=done")
    assert bad.status_code == 400 and bad.json()["detail"].startswith("Status: 'done' is not one of accepted")


def test_approve_reject_bonus_and_block(api: Client, batch: Batch) -> None:
    alice, bob = _submitted(batch, "alice", 0), _submitted(batch, "bob", 1)
    a, b = f"/api/assignments/{alice.public_id}", f"/api/assignments/{bob.public_id}"
    approved = _post(api, f"{a}/approve", {"feedback": "thanks"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert approved.json()["feedback"] == "thanks"
    assert _post(api, f"{a}/approve").json() == {
        "detail": "Only submitted assignments can be approved; this one is approved."
    }
    no_reason = _post(api, f"{b}/reject", {"feedback": " "})
    assert no_reason.status_code == 400
    assert no_reason.json() == {"detail": "Rejecting needs feedback that tells the worker why."}
    assert _post(api, f"{b}/reject", {"feedback": "not the images"}).json()["status"] == "rejected"
    assert _post(api, f"{a}/bonus", {"amount": "0.50", "reason": "careful"}).json()["bonus"] == "0.50"
    assert _post(api, f"{a}/bonus", {"amount": "0.50", "reason": "again"}).json() == {
        "detail": "This assignment already got a bonus."
    }
    assert _post(api, f"{b}/bonus", {"amount": "0", "reason": "x"}).status_code == 422
    assert _post(api, f"{b}/bonus", {"amount": "1.005", "reason": "x"}).status_code == 422
    assert _post(api, f"{b}/bonus", {"amount": "1", "reason": "x"}).json() == {
        "detail": "Only submitted or approved assignments can get a bonus."
    }
    assert _post(api, f"{b}/block", {"reason": ""}).json() == {"detail": "Blocking needs a reason."}
    blocked = _post(api, f"{b}/block", {"reason": "copy-paste answers"})
    assert blocked.status_code == 200 and blocked.json()["blocked"] is True
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert (alice.status, alice.bonus, bob.status, bob.bonus) == (
        Status.APPROVED,
        Decimal("0.50"),
        Status.REJECTED,
        Decimal("0"),
    )
    assert CrowdWorker.objects.get(external_id="bob").blocked_reason == "copy-paste answers"
    assert not CrowdWorker.objects.get(external_id="alice").blocked


def test_many_are_reviewed_at_once_and_failures_listed(api: Client, batch: Batch) -> None:
    alice, bob = _submitted(batch, "alice", 0), _submitted(batch, "bob", 1)
    services.assignment_approve(assignment=bob)
    path = f"/api/batches/{batch.public_id}/review"
    ids = [str(alice.public_id), str(bob.public_id)]
    outcome = _post(api, path, {"action": "approve", "assignments": ids}).json()
    assert (
        outcome["done"] == 1
        and len(outcome["errors"]) == 1
        and "this one is approved" in outcome["errors"][0]
    )
    assert _post(api, path, {"action": "reject", "assignments": ids}).json() == {
        "detail": "Rejecting needs feedback that tells the worker why."
    }
    assert _post(api, path, {"action": "approve", "assignments": []}).json() == {
        "detail": "Select at least one assignment."
    }
    unknown = "00000000-0000-0000-0000-000000000000"
    response = _post(api, path, {"action": "approve", "assignments": [unknown]})
    assert response.status_code == 404 and unknown in response.json()["detail"]
    assert _post(api, path, {"action": "pay", "assignments": ids}).status_code == 422


def test_the_export_is_the_pages_export(api: Client, page: Client, gold_batch: Batch) -> None:
    _submitted(gold_batch, "alice", 0)
    _submitted(gold_batch, "bob", 1, "sky")
    for fmt in ("json", "csv"):
        response = api.get(f"/api/batches/{gold_batch.public_id}/export?format={fmt}")
        assert response.status_code == 200
        assert response.content == page.get(f"/batches/{gold_batch.public_id}/export.{fmt}").content, fmt
    rows = api.get(f"/api/batches/{gold_batch.public_id}/export").json()
    assert [(row["worker"], row["words"]) for row in rows] == [("alice", "red"), ("bob", "sky")]
    assert api.get(f"/api/batches/{gold_batch.public_id}/export?format=xml").status_code == 422


def test_the_comparison_summaries_are_the_pages_summary_json(
    api: Client, page: Client, batch: Batch, run: DissectionRun
) -> None:
    for position, words in ((0, "red"), (1, "sky"), (2, "red")):
        _submitted(batch, "alice", position, words)
        _submitted(batch, "bob", position, words)
    for subject in (f"batches/{batch.public_id}", f"runs/{run.pk}"):
        for aggregation in ("dawid_skene", "majority"):
            api_summary = api.get(f"/api/{subject}/comparison?aggregation={aggregation}")
            assert api_summary.status_code == 200
            on_page = page.get(f"/{subject}/comparison/summary.json?aggregation={aggregation}")
            assert api_summary.json() == json.loads(on_page.content), (subject, aggregation)
    fresh = api.get(f"/api/batches/{batch.public_id}/comparison")
    assert fresh["X-Comparison-Stale"] == "false" and fresh["Last-Modified"]
    summary = fresh.json()
    assert summary["tables"]["units"] and "fleiss_kappa" in summary
    services.assignment_reject(assignment=Assignment.objects.filter(task__batch=batch).first(), feedback="no")
    stale = api.get(f"/api/batches/{batch.public_id}/comparison")
    assert stale["X-Comparison-Stale"] == "true" and stale.json() == summary
    bad = api.get(f"/api/batches/{batch.public_id}/comparison?aggregation=mean")
    assert bad.status_code == 422 and "aggregation" in bad.json()["detail"]


# --- who may ----------------------------------------------------------------------------------------------


def test_another_projects_batches_and_assignments_are_404_and_unchanged(
    batch: Batch, run: DissectionRun, intruder: Client
) -> None:
    answer = _submitted(batch, "alice")
    b, a = batch.public_id, answer.public_id
    for path in ("", "/progress", "/assignments", "/export", "/export?format=csv", "/comparison"):
        response = intruder.get(f"/api/batches/{b}{path}")
        assert response.status_code == 404 and response.json() == {"detail": "No such batch."}, path
        assert b"alice" not in response.content and b"concept0" not in response.content
    for action in ("publish", "pause", "cancel"):
        assert _post(intruder, f"/api/batches/{b}/{action}").status_code == 404, action
    review = {"action": "approve", "assignments": [str(a)]}
    assert _post(intruder, f"/api/batches/{b}/review", review).status_code == 404
    for action, payload in (
        ("approve", {}),
        ("reject", {"feedback": "no"}),
        ("bonus", {"amount": "5", "reason": "hm"}),
        ("block", {"reason": "x"}),
    ):
        response = _post(intruder, f"/api/assignments/{a}/{action}", payload)
        assert response.status_code == 404 and response.json() == {"detail": "No such assignment."}, action
    stolen = _post(intruder, "/api/batches", _new_batch(run, title="Stolen"))
    assert stolen.status_code == 404 and stolen.json() == {"detail": "No such run."}
    assert [x["title"] for x in intruder.get("/api/batches").json()["items"]] == ["Other lab's batch"]
    batch.refresh_from_db()
    answer.refresh_from_db()
    assert batch.state == Batch.State.PUBLISHED
    assert (answer.status, answer.bonus, answer.feedback) == (Status.SUBMITTED, Decimal("0"), "")
    assert not CrowdWorker.objects.get(external_id="alice").blocked
    assert not Batch.objects.filter(title="Stolen").exists()


def test_an_assignment_of_ones_other_batch_is_not_reviewed_through_this_one(
    api: Client, make_batch: Callable[..., Batch], batch: Batch
) -> None:
    other = make_batch(title="Second")
    answer = _submitted(other, "alice")
    response = _post(
        api,
        f"/api/batches/{batch.public_id}/review",
        {"action": "approve", "assignments": [str(answer.public_id)]},
    )
    assert response.status_code == 404
    answer.refresh_from_db()
    assert answer.status == Status.SUBMITTED


def test_a_crowd_worker_has_no_way_in(batch: Batch) -> None:
    """A crowd worker has no account and no token: what they hold (their session on the batch link, their
    personal link's token, their ids) opens no endpoint."""
    browser = Client()
    start = browser.post(f"/w/{batch.public_id}/", {"worker_id": "mallory"})
    personal = start.url
    assert browser.get(personal).status_code == 302
    worker = CrowdWorker.objects.get(label="mallory")
    link_token = personal.rstrip("/").rsplit("/", 1)[-1]
    for client in (
        browser,
        bearer(link_token),
        bearer(worker.external_id),
        bearer(str(worker.public_id)),
    ):
        for path in (
            "/api/batches",
            f"/api/batches/{batch.public_id}",
            f"/api/batches/{batch.public_id}/export",
        ):
            assert client.get(path).status_code == 401, path
    assert _post(browser, f"/api/batches/{batch.public_id}/pause").status_code == 401
    batch.refresh_from_db()
    assert batch.state == Batch.State.PUBLISHED


def test_each_decision_through_the_api_leaves_one_audit_record_naming_the_requester(
    api: Client, boss: Any, make_batch: Callable[..., Batch]
) -> None:
    from runs.models import AuditEvent

    batch = make_batch(publish=False)
    b = f"/api/batches/{batch.public_id}"
    _post(api, f"{b}/publish")
    alice, bob, carol = (
        _submitted(batch, name, position) for position, name in enumerate(("alice", "bob", "carol"))
    )
    _post(api, f"/api/assignments/{alice.public_id}/approve")
    _post(api, f"/api/assignments/{bob.public_id}/reject", {"feedback": "not the images"})
    _post(api, f"/api/assignments/{alice.public_id}/bonus", {"amount": "0.20", "reason": "careful"})
    _post(api, f"/api/assignments/{bob.public_id}/block", {"reason": "copy-paste answers"})
    _post(api, f"{b}/review", {"action": "approve", "assignments": [str(carol.public_id)]})
    api.get(f"{b}/export?format=csv")
    _post(api, f"{b}/pause")
    _post(api, f"{b}/cancel")
    events = AuditEvent.objects.filter(batch_key=batch.public_id)
    assert sorted(events.values_list("action", flat=True)) == sorted(
        ["publish", "approve", "reject", "bonus", "block", "approve", "export", "pause", "cancel"]
    )
    assert set(events.values_list("actor", flat=True)) == {boss.pk}
    refused = _post(api, f"{b}/pause")
    assert refused.status_code == 400 and events.count() == 9
