"""Run pages are kept apart by project: another project's requester gets 404 on a run's page, status, cancel
and CAM gallery, sees none of its networks or probe sets, and cannot launch on them; creating things needs a
project the requester is a member of."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client

from runs import services as runs
from runs.models import DissectionRun, Network, ProbeSet, Project
from tests.factories import logged_in, run_create, shared_project, staff_user


def _network(project: Project, name: str) -> Network:
    return Network.objects.create(project=project, name=name, architecture="toy", layers=["conv3", "conv4"])


def _probe_set(project: Project, name: str) -> ProbeSet:
    return ProbeSet.objects.create(project=project, name=name, path="/data/probe", image_count=10)


@pytest.fixture
def other_project(db: None) -> Project:
    return Project.objects.create(name="Other lab")


@pytest.fixture
def intruder(django_user_model: Any, other_project: Project) -> Client:
    return logged_in(staff_user(django_user_model, "intruder", project=other_project))


@pytest.fixture
def mine(db: None) -> DissectionRun:
    project = shared_project()
    return run_create(
        "secret run",
        network=_network(project, "secret net"),
        probe_set=_probe_set(project, "secret probes"),
        status=DissectionRun.Status.RUNNING,
        layers=["conv4"],
    )


def test_another_projects_run_pages_and_actions_are_404(mine: DissectionRun, intruder: Client) -> None:
    for url in (f"/runs/{mine.pk}/", f"/runs/{mine.pk}/status.json"):
        assert intruder.get(url).status_code == 404, url
    for url in (f"/runs/{mine.pk}/cancel/", f"/runs/{mine.pk}/cam/"):
        assert intruder.post(url).status_code == 404, url
    mine.refresh_from_db()
    assert mine.status == DissectionRun.Status.RUNNING


def test_lists_and_choices_hold_only_ones_projects(
    mine: DissectionRun, intruder: Client, staff_client: Client, other_project: Project
) -> None:
    _network(other_project, "their net")
    for page in (intruder.get("/runs/").content.decode(), intruder.get("/runs/new/").content.decode()):
        assert "their net" in page and "secret" not in page
    for page in (
        staff_client.get("/runs/").content.decode(),
        staff_client.get("/runs/new/").content.decode(),
    ):
        assert "secret net" in page and "their net" not in page and "Other lab" not in page


def test_a_run_cannot_be_launched_on_another_projects_network(
    mine: DissectionRun, intruder: Client, other_project: Project
) -> None:
    data = {
        "project": other_project.pk,
        "name": "stolen",
        "network": mine.network_id,
        "probe_set": mine.probe_set_id,
        "layers": "conv4",
        "shard_size": 8,
        "topk": 4,
        "semantics": "paper",
    }
    response = intruder.post("/runs/new/", data)
    assert response.status_code == 400 and b"Select a valid choice" in response.content
    response = intruder.post("/runs/new/", {**data, "project": shared_project().pk})
    assert response.status_code == 400
    assert not DissectionRun.objects.filter(name="stolen").exists()


def test_registering_needs_a_project_one_is_a_member_of(
    intruder: Client, other_project: Project, tmp_path
) -> None:
    form = intruder.get("/probe-sets/new/").content.decode()
    assert (
        f'<option value="{other_project.pk}" selected>Other lab</option>' in form
    )  # the only one: preselected
    response = intruder.post(
        "/probe-sets/new/", {"project": shared_project().pk, "name": "p", "path": str(tmp_path)}
    )
    assert response.status_code == 400 and b"Select a valid choice" in response.content
    response = intruder.post(
        "/networks/new/",
        {
            "project": shared_project().pk,
            "name": "n",
            "architecture": "toy",
            "weights": ContentFile(b"x", "x.pt"),
        },
    )
    assert response.status_code == 400 and b"Select a valid choice" in response.content
    assert not ProbeSet.objects.exists() and not Network.objects.exists()


def test_services_refuse_a_project_the_creator_is_not_a_member_of(
    mine: DissectionRun, other_project: Project, django_user_model: Any, tmp_path
) -> None:
    outsider = staff_user(django_user_model, "outsider", project=other_project)
    project = shared_project()
    with pytest.raises(runs.RunError, match="not a member of project 'Tests'"):
        runs.probe_set_register(project=project, name="p", path=str(tmp_path), created_by=outsider)
    with pytest.raises(runs.RunError, match="not a member of project 'Tests'"):
        runs.network_register(
            project=project,
            name="n",
            architecture="toy",
            weights=ContentFile(b"x", "x.pt"),
            created_by=outsider,
        )
    assert mine.network is not None and mine.probe_set is not None
    with pytest.raises(runs.RunError, match="Network: 'secret net' is not in project 'Other lab'"):
        runs.run_launch(
            project=other_project,
            name="stolen",
            network=mine.network,
            probe_set=mine.probe_set,
            layers=["conv4"],
            created_by=outsider,
        )
    assert not DissectionRun.objects.filter(name="stolen").exists()
