"""The audit trail: each requester decision leaves exactly one record, stored with the decision or not at
all, shown on the batch page and exported as CSV to the batch's project only."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import transaction
from django.test import Client

from annotate import services
from annotate.models import Assignment, Batch, Provider
from annotate.providers import ProviderError
from annotate.providers.local import LocalProvider
from runs import audit
from runs import services as runs_services
from runs.models import AuditEvent, Network, ProbeSet, Project, Readiness
from tests.factories import logged_in, shared_project, staff_user

Action = AuditEvent.Action


@pytest.fixture
def boss(django_user_model):
    return staff_user(django_user_model)


@pytest.fixture
def answered(batch: Batch) -> Callable[..., Assignment]:
    """A submitted answer of a new local crowd worker to the first task of `on` (default: `batch`)."""

    def make(name: str, on: Batch = batch) -> Assignment:
        worker = services.crowd_worker_create(provider=Provider.LOCAL, label=name)
        assignment = services.assignment_accept(task=on.tasks.order_by("position")[0], worker=worker)
        services.annotation_submit(assignment=assignment, words="red", category="color")
        return Assignment.objects.get(pk=assignment.pk)

    return make


def _counts() -> dict[str, int]:
    return {action: AuditEvent.objects.filter(action=action).count() for action in Action.values}


def _one_more(before: dict[str, int], action: str) -> None:
    after = _counts()
    assert after[action] == before[action] + 1
    assert {k: v for k, v in after.items() if k != action} == {k: v for k, v in before.items() if k != action}


def test_each_batch_decision_leaves_exactly_one_record(make_batch, answered, boss) -> None:
    batch = make_batch(publish=False, assignments_per_task=3)
    decisions: list[tuple[str, Callable[[], object]]] = [
        ("publish", lambda: services.batch_publish(batch=batch, actor=boss)),
        ("pause", lambda: services.batch_pause(batch=batch, actor=boss)),
        ("publish", lambda: services.batch_publish(batch=batch, actor=boss)),
    ]
    for action, decide in decisions:
        before = _counts()
        decide()
        _one_more(before, action)
    first, second, third = (answered(name, on=batch) for name in ("ann", "bob", "cid"))
    for action, decide in [
        ("approve", lambda: services.assignment_approve(assignment=first, feedback="Good", actor=boss)),
        ("reject", lambda: services.assignment_reject(assignment=second, feedback="Not it", actor=boss)),
        (
            "bonus",
            lambda: services.assignment_send_bonus(
                assignment=first, amount=Decimal("0.20"), reason="Thanks", actor=boss
            ),
        ),
        (
            "block",
            lambda: services.crowd_worker_block(worker=third.worker, reason="Spam", actor=boss, batch=batch),
        ),
        ("unblock", lambda: services.crowd_worker_unblock(worker=third.worker, actor=boss)),
        (
            "block",
            lambda: services.crowd_worker_block(worker=third.worker, reason="Spam", actor=boss, batch=batch),
        ),
        (
            "export",
            lambda: services.batch_export_record(batch=batch, what="answers as csv", rows=3, actor=boss),
        ),
        ("cancel", lambda: services.batch_cancel(batch=batch, actor=boss)),
    ]:
        before = _counts()
        decide()
        _one_more(before, action)
    events = AuditEvent.objects.filter(batch_key=batch.public_id).order_by("at", "pk")
    assert [e.action for e in events] == [
        "publish",
        "pause",
        "publish",
        "approve",
        "reject",
        "bonus",
        "block",
        "unblock",
        "block",
        "export",
        "cancel",
    ]
    assert {e.actor_name for e in events} == {"boss"}
    assert {e.project_id for e in events} == {batch.project_id}
    reject = events.get(action="reject")
    assert reject.details == {"feedback": "Not it", "category": "", "assignment": str(second.public_id)}
    assert str(second.public_id) in reject.subject and "unit 1" in reject.subject


def test_launching_and_cancelling_a_run_leave_one_record_each(boss) -> None:
    project = shared_project()
    network = Network.objects.create(
        project=project, name="net", architecture="toy", layers=["conv4"], status=Readiness.READY
    )
    probe_set = ProbeSet.objects.create(
        project=project, name="probes", path="/nowhere", image_count=10, status=Readiness.READY
    )
    before = _counts()
    run = runs_services.run_launch(
        project=project,
        name="audited",
        network=network,
        probe_set=probe_set,
        layers=["conv4"],
        created_by=boss,
    )
    _one_more(before, "launch_run")
    before = _counts()
    runs_services.run_cancel(run=run, actor=boss)
    _one_more(before, "cancel_run")
    launch = AuditEvent.objects.get(action="launch_run")
    assert (launch.run, launch.actor, launch.details["layers"]) == (run, boss, ["conv4"])


def test_a_decision_the_provider_refused_leaves_no_record(batch: Batch, answered, monkeypatch, boss) -> None:
    assignment = answered("ann")

    def refuse(self, assignment, feedback):
        raise ProviderError("Prolific POST /submissions/x/transition/ failed: 400 no")

    monkeypatch.setattr(LocalProvider, "approve", refuse)
    with pytest.raises(ProviderError):
        services.assignment_approve(assignment=assignment, actor=boss)
    assert not AuditEvent.objects.filter(action="approve").exists()
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.Status.SUBMITTED


def test_the_record_is_written_with_the_decision_or_not_at_all(batch: Batch, answered, monkeypatch) -> None:
    assignment = answered("ann")

    def broken(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("annotate.services.review.audit_event_record", broken)
    with pytest.raises(RuntimeError):
        services.assignment_approve(assignment=assignment)
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.Status.SUBMITTED


def test_records_are_append_only(batch: Batch, boss) -> None:
    services.batch_pause(batch=batch, actor=boss)
    event = AuditEvent.objects.get(action="pause")
    event.subject = "changed"
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    with pytest.raises(TypeError, match="append-only"):
        event.delete()
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.filter(pk=event.pk).update(subject="changed")
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(action="pause").subject != "changed"


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused() -> None:
    project = Project.objects.create(name="Autocommit")
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit.audit_event_record(project=project, action="pause", subject="x")
    assert not AuditEvent.objects.exists()


def test_the_batch_page_shows_the_trail_and_the_csv_is_the_projects_only(
    batch: Batch, answered, boss, django_user_model
) -> None:
    assignment = answered("ann")
    services.assignment_reject(assignment=assignment, feedback='=HYPERLINK("http://x")', actor=boss)
    client = logged_in(boss)
    page = client.get(f"/batches/{batch.public_id}/").content.decode()
    assert "Audit trail" in page and "Reject" in page and "boss" in page
    assert "=HYPERLINK(&quot;http://x&quot;)" in page
    response = client.get(f"/batches/{batch.public_id}/audit.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["who"], r["action"]) for r in rows] == [("automatic", "publish"), ("boss", "reject")]
    assert rows[1]["details"].startswith("{") and '"feedback": "=HYPERLINK' in rows[1]["details"]

    assert client.get(f"/batches/{batch.public_id}/export.csv").status_code == 200
    (export,) = AuditEvent.objects.filter(action="export")
    assert (export.actor, export.subject, export.details) == (
        boss,
        f"batch {batch.title!r}: answers as csv",
        {"rows": 1},
    )

    outsider = staff_user(django_user_model, "other", project=Project.objects.create(name="Elsewhere"))
    assert logged_in(outsider).get(f"/batches/{batch.public_id}/audit.csv").status_code == 404
    assert Client().get(f"/batches/{batch.public_id}/audit.csv").status_code == 302


def test_a_formula_in_a_cell_is_kept_as_text(batch: Batch) -> None:
    with transaction.atomic():
        audit.audit_event_record(project=batch.project, action="block", subject="=cmd|' /C calc'!A0")
    buffer = io.StringIO()
    audit.audit_csv_write(AuditEvent.objects.filter(action="block"), buffer)
    header, row = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert tuple(header) == audit.CSV_FIELDS
    assert row[1:4] == ["automatic", "block", "'=cmd|' /C calc'!A0"]
