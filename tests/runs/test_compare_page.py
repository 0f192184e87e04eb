"""The comparison of runs in the service: two finished runs side by side, from their stored results only,
kept within the requester's projects."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from runs.models import DissectionRun, Project
from tests.factories import logged_in, staff_user
from tests.runs.conftest import drain

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_two_finished_runs_compare_on_a_page_and_as_json(launch, staff_client: Client) -> None:
    first = drain(launch("first", layers=["conv4"]))
    second = drain(launch("second", layers=["conv4"], topk=2))
    listing = staff_client.get("/runs/").content.decode()
    assert f'name="run" value="{first.pk}" aria-label="Compare first"' in listing
    page = staff_client.get(f"/runs/compare/?run={first.pk}&run={second.pk}")
    assert page.status_code == 200 and "img-src data:" in page["Content-Security-Policy"]
    html = page.content.decode()
    assert "<h1>Comparison of dissections</h1>" in html and "first → second, layer conv4" in html
    assert 'aria-label="Unique concepts detected per category in layer conv4' in html
    document = staff_client.get(f"/runs/compare/?run={first.pk}&run={second.pk}&format=json").json()
    assert [run["name"] for run in document["runs"]] == ["first", "second"]
    transition = document["transitions"][0]
    assert sum(transition["counts"].values()) == 128
    # The same network on the same images: every unit keeps its concept (top-k only changes the tiles).
    assert transition["counts"]["kept"] + transition["counts"]["neither"] == 128
    assert document["layers"]["conv4"]["first"] == document["layers"]["conv4"]["second"]


def test_one_run_or_an_unfinished_one_is_refused_with_a_message(launch, staff_client: Client) -> None:
    done = drain(launch("done", layers=["conv4"]))
    queued = launch("queued", layers=["conv4"])
    for query in (f"run={done.pk}", f"run={done.pk}&run={queued.pk}"):
        response = staff_client.get(f"/runs/compare/?{query}", follow=True)
        assert re.search(
            r"Pick at least two finished runs|Only finished runs can be compared", response.content.decode()
        )


def test_another_projects_run_is_a_404(launch, django_user_model: Any, staff_client: Client) -> None:
    first = drain(launch("first", layers=["conv4"]))
    second = drain(launch("second", layers=["conv4"]))
    intruder = logged_in(
        staff_user(django_user_model, "intruder", project=Project.objects.create(name="Other"))
    )
    assert intruder.get(f"/runs/compare/?run={first.pk}&run={second.pk}").status_code == 404
    assert staff_client.get(f"/runs/compare/?run={first.pk}&run={second.pk}").status_code == 200
    assert DissectionRun.objects.count() == 2
