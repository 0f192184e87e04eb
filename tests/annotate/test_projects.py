"""Requesters are kept apart by project: a second requester, logged in, tries the first one's batch pages,
exports, actions and comparison the way an attacker would (ids known) and gets 404 every time, with nothing
changed; the superuser sees every project."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from annotate import services
from annotate.errors import AnnotateError
from annotate.models import Assignment, Batch, CrowdWorker, Provider
from annotate.services.verification import verification_batch_create
from runs.models import DissectionRun, Project, Unit
from tests.factories import logged_in, run_create, staff_user, unit_create

Status = Assignment.Status


def _submitted(batch: Batch, worker_id: str, position: int = 0) -> Assignment:
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=worker_id)
    assignment = services.assignment_accept(task=batch.tasks.get(position=position), worker=worker)
    services.annotation_submit(assignment=assignment, words="red", category="color", rejected_ranks=[])
    return assignment


@pytest.fixture
def other_project(db: None) -> Project:
    return Project.objects.create(name="Other lab")


@pytest.fixture
def intruder(django_user_model: Any, other_project: Project) -> Client:
    """A requester of another project, with a run and a batch of their own."""
    user = staff_user(django_user_model, "intruder", project=other_project)
    run = run_create("other run", project=other_project, status=DissectionRun.Status.DONE, layers=["conv4"])
    units = [unit_create(run, channel, label=f"other{channel}") for channel in range(2)]
    services.batch_create(title="Other lab's batch", units=units, created_by=user)
    return logged_in(user)


def _pages(batch: Batch, run: DissectionRun) -> list[str]:
    b = batch.public_id
    return [
        f"/batches/{b}/",
        f"/batches/{b}/review/",
        f"/batches/{b}/export.csv",
        f"/batches/{b}/export.json",
        f"/batches/{b}/comparison/",
        f"/batches/{b}/comparison/summary.json",
        f"/batches/{b}/comparison/units.csv",
        f"/runs/{run.pk}/comparison/",
        f"/runs/{run.pk}/comparison/units.json",
    ]


def test_another_projects_pages_and_exports_are_404(
    batch: Batch, run: DissectionRun, intruder: Client
) -> None:
    _submitted(batch, "alice")
    for url in _pages(batch, run):
        response = intruder.get(url)
        assert response.status_code == 404, url
        assert b"alice" not in response.content and b"concept0" not in response.content, url


def test_another_projects_actions_are_404_and_change_nothing(batch: Batch, intruder: Client) -> None:
    answer = _submitted(batch, "alice")
    b = batch.public_id
    for action in ("pause", "cancel", "sync", "publish"):
        assert intruder.post(f"/batches/{b}/{action}/", {"confirm": "yes"}).status_code == 404, action
    for data in (
        {"action": "approve", "assignments": [str(answer.public_id)]},
        {"action": "reject", "assignments": [str(answer.public_id)], "feedback": "no", "confirm": "yes"},
        {"action": "bonus", "assignments": [str(answer.public_id)], "feedback": "hm", "bonus_amount": "5"},
    ):
        assert intruder.post(f"/batches/{b}/review/", data).status_code == 404, data["action"]
    worker = CrowdWorker.objects.get(external_id="alice")
    assert (
        intruder.post(
            f"/crowd-workers/{worker.public_id}/block/", {"reason": "x", "confirm": "yes"}
        ).status_code
        == 404
    )
    assert intruder.post(f"/batches/{b}/verification/new/").status_code == 404
    batch.refresh_from_db()
    answer.refresh_from_db()
    worker.refresh_from_db()
    assert batch.state == Batch.State.PUBLISHED
    assert (answer.status, answer.bonus, answer.feedback) == (Status.SUBMITTED, Decimal("0"), "")
    assert not worker.blocked
    assert not Batch.objects.filter(tasks__kind="verify").exists()


def test_blocking_from_ones_own_batch_needs_a_worker_of_that_batch(
    batch: Batch, intruder: Client, other_project: Project
) -> None:
    """A crowd worker is blocked everywhere, so a requester may only block one who worked on their batch."""
    _submitted(batch, "alice")
    worker = CrowdWorker.objects.get(external_id="alice")
    assert Batch.objects.filter(project=other_project).exists()
    response = intruder.post(f"/crowd-workers/{worker.public_id}/block/", {"reason": "x", "confirm": "yes"})
    assert response.status_code == 404
    worker.refresh_from_db()
    assert not worker.blocked


def test_dashboard_and_batch_form_list_only_ones_projects(
    batch: Batch, run: DissectionRun, intruder: Client, staff_client: Client
) -> None:
    page = intruder.get("/").content.decode()
    assert "Other lab&#x27;s batch" in page and "other run" in page
    assert batch.title not in page and "test run" not in page
    form = intruder.get("/batches/new/").content.decode()
    assert "other run" in form and "test run" not in form
    mine = staff_client.get("/").content.decode()
    assert batch.title in mine and "Other lab" not in mine and "other run" not in mine


def test_a_batch_cannot_be_made_from_another_projects_run(
    run: DissectionRun, units, intruder: Client
) -> None:
    response = intruder.post(
        "/batches/new/",
        {
            "title": "Stolen",
            "run": run.pk,
            "layer": "conv4",
            "selection": "all",
            "provider": "local",
            "assignments_per_task": 1,
            "images_per_task": 4,
            "reward": "0",
            "assignment_minutes": 5,
            "lifetime_hours": 1,
            "block_min_gold": 2,
        },
    )
    assert response.status_code == 400 and b"Select a valid choice" in response.content
    assert not Batch.objects.filter(title="Stolen").exists()


def test_the_superuser_sees_every_project(
    batch: Batch, run: DissectionRun, intruder: Client, django_user_model
) -> None:
    root = logged_in(django_user_model.objects.create_superuser("root", password="x-pw-1234567"))
    page = root.get("/").content.decode()
    assert batch.title in page and "Other lab&#x27;s batch" in page
    for url in _pages(batch, run):
        assert root.get(url).status_code == 200, url


def test_batch_create_keeps_a_batch_in_its_units_project(
    units: list[Unit], other_project: Project, django_user_model
) -> None:
    foreign_run = run_create("foreign", project=other_project, status=DissectionRun.Status.DONE)
    foreign = unit_create(foreign_run, 0)
    with pytest.raises(AnnotateError, match="own project only"):
        services.batch_create(title="mixed", units=[*units, foreign])
    with pytest.raises(AnnotateError, match="own project only"):
        services.batch_create(
            title="gold from elsewhere",
            units=units,
            gold={foreign.pk: services.GoldAnswer("color", ("red",))},
        )
    with pytest.raises(AnnotateError, match="own project only"):
        services.batch_create(title="wrong project", units=units, project=other_project)
    outsider = staff_user(django_user_model, "outsider", project=other_project)
    with pytest.raises(AnnotateError, match="not a member of project 'Tests'"):
        services.batch_create(title="not mine", units=units, created_by=outsider)
    assert not Batch.objects.exists()
    batch = services.batch_create(title="fine", units=units)
    assert batch.project == units[0].run.project


def test_a_verification_batch_stays_in_its_source_project(
    batch: Batch, other_project: Project, django_user_model
) -> None:
    outsider = staff_user(django_user_model, "outsider", project=other_project)
    with pytest.raises(AnnotateError, match="not a member"):
        verification_batch_create(batch=batch, created_by=outsider)
