"""Versions of a network (checkpoints with their training step), a series of runs launched in one action,
their comparison page with its training lines, unit links and per-table CSV downloads, kept within the
requester's projects; and the tables themselves, checked against hand-computed rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from django.core.files import File
from django.test import Client

from dissection.compare import LoadedRun, RunSpec, compare
from dissection.compare_tables import TABLES, compare_table, table_csv
from runs import services as runs
from runs.errors import RunError
from runs.models import DissectionRun, Network, ProbeSet, Project, Unit
from tests.factories import logged_in, staff_user
from tests.runs.conftest import drain


def _layer(units: list[tuple[str, str, float]]) -> dict[str, Any]:
    return {
        "schema": 1,
        "layer": "conv",
        "iou_threshold": 0.04,
        "categories": ["object", "color"],
        "probe_set": "p",
        "semantics": "paper",
        "units": [
            {"channel": i, "label": label, "category": category, "iou": iou}
            for i, (label, category, iou) in enumerate(units)
        ],
    }


def test_tables_of_a_hand_made_comparison() -> None:
    before = _layer([("dog", "object", 0.10), ("red", "color", 0.05), ("cat", "object", 0.01)])
    after = _layer([("dog", "object", 0.20), ("sky", "object", 0.08), ("red", "color", 0.06)])
    document = compare(
        [
            LoadedRun(RunSpec("late", Path("b"), step=200, tags={"stage": "x"}), {"conv": after}, {}),
            LoadedRun(RunSpec("early", Path("a"), step=100), {"conv": before}, {}),
        ]
    )
    assert compare_table(document, "runs")[1] == [
        ["early", 100, "", "conv", "p", "paper"],
        ["late", 200, "stage=x", "conv", "p", "paper"],
    ]
    assert compare_table(document, "layers")[1] == [
        ["conv", "early", 100, 3, 2, 2, 0.04],
        ["conv", "late", 200, 3, 3, 3, 0.04],
    ]
    columns, rows = compare_table(document, "categories")
    assert columns == ["layer", "run", "step", "category", "units", "unique_concepts", "share"]
    assert rows[2] == ["conv", "late", 200, "object", 2, 2, 2 / 3]
    assert compare_table(document, "series")[1] == [
        ["conv", "early", 100, 2, 2, "object", 1],
        ["conv", "early", 100, 2, 2, "color", 1],
        ["conv", "late", 200, 3, 3, "object", 2],
        ["conv", "late", 200, 3, 3, "color", 1],
    ]
    columns, rows = compare_table(document, "transitions")
    assert [dict(zip(columns, row, strict=True))["status"] for row in rows] == ["kept", "changed", "gained"]
    assert dict(zip(columns, rows[1], strict=True)) == {
        "before": "early",
        "after": "late",
        "layer": "conv",
        "unit": 2,
        "channel": 1,
        "status": "changed",
        "changed_rank": 1,
        "before_label": "red",
        "before_category": "color",
        "before_iou": 0.05,
        "before_interpretable": True,
        "after_label": "sky",
        "after_category": "object",
        "after_iou": 0.08,
        "after_interpretable": True,
    }
    matrix = {(row[3], row[4]): row[5] for row in compare_table(document, "transition_matrix")[1]}
    assert matrix == {
        ("object", "object"): 1,
        ("object", "color"): 0,
        ("object", "none"): 0,
        ("color", "object"): 1,
        ("color", "color"): 0,
        ("color", "none"): 0,
        ("none", "object"): 0,
        ("none", "color"): 1,
        ("none", "none"): 0,
    }
    text = table_csv(*compare_table(document, "transitions"))
    assert text.splitlines()[2].endswith(",red,color,0.05,true,sky,object,0.08,true")
    with pytest.raises(KeyError, match="no table 'nope'"):
        compare_table(document, "nope")


def _checkpoint(network: Network, toy_weights: Path, name: str, step: int) -> Network:
    with toy_weights.open("rb") as handle:
        return runs.network_register(
            project=network.project,
            name=name,
            architecture="toy",
            weights=File(handle, name=f"{name}.pt"),
            step=step,
            base=network,
            inspect_now=True,
        )


@pytest.mark.django_db
@pytest.mark.slow
def test_a_series_launched_in_one_action_compares_by_step_with_csv_and_unit_links(
    network_and_probe_set: tuple[Network, ProbeSet],
    toy_weights: Path,
    staff_client: Client,
    django_user_model: Any,
) -> None:
    network, probe_set = network_and_probe_set
    network.step = 0
    network.save()
    later = _checkpoint(network, toy_weights, "toy-step-300", 300)
    form = {
        "project": network.project.pk,
        "name": "series",
        "networks": [later.pk, network.pk],
        "probe_set": probe_set.pk,
        "layers": "conv4",
        "shard_size": 48,
        "topk": 2,
        "semantics": "paper",
    }
    response = staff_client.post("/runs/series/new/", form)
    made = list(DissectionRun.objects.order_by("pk"))
    assert [run.name for run in made] == ["series toy", "series toy-step-300"]
    assert response.status_code == 302
    assert response["Location"] == f"/runs/compare/?run={made[0].pk}&run={made[1].pk}"
    waiting = staff_client.get(response["Location"]).content.decode()
    assert "Only finished runs can be compared" in waiting and "series toy-step-300" in waiting
    for run in made:
        drain(run)
    page = staff_client.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200 and "img-src data:" in page["Content-Security-Policy"]
    assert "Interpretable units and unique concepts of layer conv4 over training" in html
    assert "series toy → series toy-step-300, layer conv4" in html
    changed_or_linked = Unit.objects.get(run=made[1], layer="conv4", channel=0)
    assert f'href="/units/{changed_or_linked.pk}/"' in html or "No unit detects another concept" in html
    for table in TABLES:
        assert f"format=csv&amp;table={table}" in html
    download = staff_client.get(f"{response['Location']}&format=csv&table=transitions")
    assert download["Content-Type"] == "text/csv"
    assert download["Content-Disposition"] == 'attachment; filename="compare-transitions.csv"'
    rows = list(csv.DictReader(io.StringIO(download.content.decode())))
    assert len(rows) == 128 and {row["before"] for row in rows} == {"series toy"}
    runs_rows = list(
        csv.DictReader(
            io.StringIO(staff_client.get(f"{response['Location']}&format=csv&table=runs").content.decode())
        )
    )
    assert [(row["run"], row["step"]) for row in runs_rows] == [
        ("series toy", "0"),
        ("series toy-step-300", "300"),
    ]
    assert "base=toy" in runs_rows[1]["tags"]
    assert staff_client.get(f"{response['Location']}&format=csv&table=secrets").status_code == 404
    intruder = logged_in(
        staff_user(django_user_model, "intruder", project=Project.objects.create(name="Other"))
    )
    assert intruder.get(f"{response['Location']}&format=csv&table=runs").status_code == 404
    detail = staff_client.get(f"/runs/{made[0].pk}/").content.decode()
    assert f'href="/runs/?compare={made[0].pk}#runs"' in detail
    listing = staff_client.get(f"/runs/?compare={made[0].pk}").content.decode()
    assert f'value="{made[0].pk}" aria-label="Compare series toy" checked' in listing


@pytest.mark.django_db
def test_a_series_is_all_or_nothing_and_stays_in_its_project(
    network_and_probe_set: tuple[Network, ProbeSet], toy_weights: Path, django_user_model: Any
) -> None:
    network, probe_set = network_and_probe_set
    later = _checkpoint(network, toy_weights, "toy-later", 10)
    runs.run_launch(
        project=network.project, name="taken toy-later", network=later, probe_set=probe_set, layers=["conv4"]
    )
    with pytest.raises(RunError, match="'taken toy-later' exists already"):
        runs.run_series_launch(
            project=network.project,
            name="taken",
            networks=[network, later],
            probe_set=probe_set,
            layers=["conv4"],
        )
    assert not DissectionRun.objects.filter(name="taken toy").exists()
    with pytest.raises(RunError, match="at least two networks"):
        runs.run_series_launch(
            project=network.project, name="one", networks=[network], probe_set=probe_set, layers=["conv4"]
        )
    other = Project.objects.create(name="Other")
    with (
        pytest.raises(RunError, match="Base: network 'toy' is not in project 'Other'"),
        toy_weights.open("rb") as handle,
    ):
        runs.network_register(
            project=other, name="x", architecture="toy", weights=File(handle, name="x.pt"), base=network
        )
    intruder = logged_in(staff_user(django_user_model, "intruder", project=other))
    response = intruder.post(
        "/runs/series/new/",
        {
            "project": other.pk,
            "name": "steal",
            "networks": [network.pk, later.pk],
            "probe_set": probe_set.pk,
            "layers": "conv4",
            "shard_size": 48,
            "topk": 2,
            "semantics": "paper",
        },
    )
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert DissectionRun.objects.count() == 1
