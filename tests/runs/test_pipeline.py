"""The run pipeline driven in this process: shards, idempotency, failure and cancel semantics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage

from dissection.networks import load_model
from dissection.pipeline import dissect
from runs import services as runs
from runs.models import DissectionRun, Shard, Unit, UnitImage
from tests.factories import logged_in, staff_user
from tests.runs.conftest import LAYERS, TOPK, drain, tally_arrays

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_sharded_run_matches_one_pass_dissection(
    launch, probe_set_dir: Path, toy_weights: Path, tmp_path: Path
) -> None:
    run = drain(launch())
    assert run.status == DissectionRun.Status.DONE, run.error
    assert run.progress == 1.0 and run.shards_done == run.shards_total == 2 * 4 + 2 + 3  # + 2 merges, publish
    reference = dissect(
        probe_set_dir,
        tmp_path / "ref",
        layers=LAYERS,
        topk=TOPK,
        workers=0,
        model=load_model("toy", weights=toy_weights),
    )
    for layer in LAYERS:
        expected = json.loads((reference[layer] / "result.json").read_text())
        units = {u.channel: u for u in Unit.objects.filter(run=run, layer=layer)}
        assert len(units) == expected["num_units"]
        for entry in expected["units"]:
            unit = units[entry["channel"]]
            assert (unit.label, unit.concept_category, unit.interpretable) == (
                entry["label"],
                entry["category"],
                entry["interpretable"],
            )
            assert unit.iou == pytest.approx(entry["iou"], abs=0) and unit.threshold == entry["threshold"]
            images = list(unit.images.order_by("rank"))
            assert [i.source_image for i in images] == [e["image"] for e in entry["images"]]
            assert default_storage.exists(unit.strip.name) and not images[0].image.name  # tiles on demand
        assert default_storage.exists(run.report[layer])


def test_a_shard_delivered_twice_does_not_change_the_tally(launch) -> None:
    once = drain(launch("once"))
    twice = drain(launch("twice"), order=lambda ids: ids + ids)
    assert once.status == twice.status == DissectionRun.Status.DONE
    a, b = tally_arrays(once), tally_arrays(twice)
    for layer in LAYERS:
        for key in a[layer]:
            np.testing.assert_array_equal(a[layer][key], b[layer][key])
    assert Shard.objects.filter(run=twice, deliveries=1).count() == twice.shards_total
    assert twice.shards_done == twice.shards_total
    from runs.tasks import dissect_shard

    last = Shard.objects.filter(run=twice, phase="render").first()
    dissect_shard.run(last.pk)
    assert Unit.objects.filter(run=twice).count() == Unit.objects.filter(run=once).count()
    assert (
        UnitImage.objects.filter(unit__run=twice).count() == UnitImage.objects.filter(unit__run=once).count()
    )


def test_a_corrupt_image_fails_the_run_naming_the_file(
    launch, probe_set_dir: Path, tmp_path: Path, network_and_probe_set
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(probe_set_dir, broken)
    import csv

    with (broken / "index.csv").open() as handle:
        victim = broken / "images" / list(csv.DictReader(handle))[50]["image"]
    victim.write_bytes(b"not a png")
    network, _ = network_and_probe_set
    probe_set = runs.probe_set_register(
        project=network.project, name="broken", path=str(broken), inspect_now=True
    )
    run = drain(
        runs.run_launch(
            project=network.project,
            name="broken run",
            network=network,
            probe_set=probe_set,
            layers=LAYERS,
            shard_size=48,
            topk=TOPK,
        )
    )
    assert run.status == DissectionRun.Status.FAILED
    assert str(victim) in run.error and "scan shard 1" in run.error
    assert not Unit.objects.filter(run=run).exists()


def test_too_many_deliveries_fail_the_run(launch, settings) -> None:
    settings.SHARD_MAX_DELIVERIES = 2
    run = launch()
    shard = Shard.objects.filter(run=run).first()
    Shard.objects.filter(pk=shard.pk).update(deliveries=2)
    from runs.tasks import dissect_shard

    dissect_shard.run(shard.pk)
    run.refresh_from_db()
    assert run.status == DissectionRun.Status.FAILED and "delivered 3 times" in run.error


def test_cancel_drops_remaining_shards_and_publishes_nothing(launch) -> None:
    from runs.tasks import dissect_shard

    run = launch()
    first, *rest = Shard.objects.filter(run=run).order_by("index")
    dissect_shard.run(first.pk)
    runs.run_cancel(run=run)
    for shard in rest:
        dissect_shard.run(shard.pk)
    run.refresh_from_db()
    assert run.status == DissectionRun.Status.CANCELLED
    assert Shard.objects.filter(run=run, status=Shard.Status.DONE).count() == 1
    assert not Shard.objects.filter(run=run, phase="tally").exists()
    assert not Unit.objects.filter(run=run).exists()
    with pytest.raises(runs.RunError):
        runs.run_cancel(run=run)


def test_a_shard_in_flight_stops_at_its_next_progress_report(launch, monkeypatch) -> None:
    from runs import pipeline as dissect

    run = launch()
    first, second = Shard.objects.filter(run=run).order_by("index")[:2]
    report = runs.shard_progress_reporter(work=runs.shard_start(shard_id=first.pk))
    report(1, 4)
    runs.run_cancel(run=run)
    with pytest.raises(runs.RunStopped):
        report(2, 4)

    DissectionRun.objects.filter(pk=run.pk).update(status="running")

    def cancelled_meanwhile(work: runs.ShardWork, progress) -> dict[str, str]:
        runs.run_cancel(run=run)
        progress(1, 2)
        raise AssertionError("a cancelled run's shard went on")

    monkeypatch.setitem(dissect.COMPUTE, Shard.Phase.SCAN, cancelled_meanwhile)
    dissect.shard_run(second.pk)
    second.refresh_from_db()
    assert (second.status, second.deliveries, second.progress) == (Shard.Status.PENDING, 1, 0.0)
    assert DissectionRun.objects.get(pk=run.pk).status == DissectionRun.Status.CANCELLED


def test_cam_gallery_joins_predictions_with_unit_labels(launch) -> None:
    from runs.selectors import run_cam_gallery
    from runs.tasks import cam_gallery

    run = drain(launch("cam", layers=["conv4"]))
    cam_gallery.run(run.pk, 4)
    run.refresh_from_db()
    entries = run_cam_gallery(run=run)
    assert len(entries) == 4
    labels = {u.channel: u.label for u in Unit.objects.filter(run=run, layer="conv4")}
    for entry in entries:
        assert entry["layer"] == "conv4" and entry["prediction"] in {"house", "tree", "car", "ball", "flag"}
        assert len(entry["units"]) == 3 and all(u["label"] == labels[u["channel"]] for u in entry["units"])
        assert default_storage.exists(entry["overlay"])
    from django.contrib.auth import get_user_model

    client = logged_in(staff_user(get_user_model(), "r"))
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "CAM gallery" in page and entries[0]["overlay_url"] in page


def test_bad_inputs_are_refused_naming_the_field_or_file(network_and_probe_set, tmp_path: Path) -> None:
    from django.core.files.base import ContentFile

    network, probe_set = network_and_probe_set
    project = network.project
    with pytest.raises(runs.RunError, match=r"junk\.pt"):
        runs.network_register(
            project=project,
            name="junk",
            architecture="toy",
            weights=ContentFile(b"junk", name="junk.pt"),
            inspect_now=True,
        )
    with pytest.raises(runs.RunError, match=f"Path: .*{tmp_path}"):
        runs.probe_set_register(project=project, name="empty", path=str(tmp_path), inspect_now=True)
    with pytest.raises(runs.RunError, match=r"Layers: .*conv9"):
        runs.run_launch(project=project, name="bad", network=network, probe_set=probe_set, layers=["conv9"])
    with pytest.raises(runs.RunError, match="exists already"):
        runs.network_register(
            project=project,
            name="toy",
            architecture="toy",
            weights=ContentFile(b"x", name="x.pt"),
            inspect_now=True,
        )
    assert not DissectionRun.objects.exists()
