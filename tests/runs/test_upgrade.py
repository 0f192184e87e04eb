"""A database made by the migrations of the old layout (every model in `annotate`), holding a run, its
units, a batch and answers, upgrades to the `runs` app with every row, key and reference kept, and puts
everything in the project "Default" whose members are the staff users."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Task
from runs.models import DissectionRun, Network, ProbeSet, Project, Shard, Unit, UnitImage

OLD = [("annotate", "0003_shard"), ("runs", None)]


def _migrate(targets: list[tuple[str, str | None]]) -> Any:
    """Migrate to `targets` and return the historical apps of that state."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def _latest() -> list[tuple[str, str | None]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def _old_rows(apps: Any) -> dict[str, Any]:
    user = apps.get_model("auth", "User").objects.create(username="requester", is_staff=True)
    apps.get_model("auth", "User").objects.create(username="not-staff")
    probe_set = apps.get_model("annotate", "ProbeSet").objects.create(
        name="broden", path="/data/broden", image_count=63305
    )
    network = apps.get_model("annotate", "Network").objects.create(
        name="resnet18", architecture="resnet18", weights="networks/weights/r18.pt"
    )
    run = apps.get_model("annotate", "DissectionRun").objects.create(
        name="resnet18 layer4",
        network=network,
        probe_set=probe_set,
        layers=["layer4"],
        semantics="paper",
        topk=20,
        status="done",
        progress=1.0,
        shards_total=5,
        shards_done=5,
        created_by=user,
        report={"layer4": "runs/1/layer4/report/report.html"},
    )
    units = [
        apps.get_model("annotate", "Unit").objects.create(
            run=run,
            layer="layer4",
            index=i,
            label=label,
            category=category,
            iou=0.1 + i / 100,
            interpretable=True,
            threshold=2.5,
            top_concepts=[{"label": label}],
        )
        for i, (label, category) in enumerate([("dog", "object"), ("grass", "material")])
    ]
    images = [
        apps.get_model("annotate", "UnitImage").objects.create(
            unit=unit,
            rank=rank,
            image=f"runs/1/layer4/report/tiles/{unit.index}-{rank}.jpg",
            max_activation=9.0 - rank,
            source_image=f"img{rank}.jpg",
        )
        for unit in units
        for rank in range(2)
    ]
    shard = apps.get_model("annotate", "Shard").objects.create(
        run=run, phase="scan", index=0, start=0, stop=64, status="done", result_keys={"layer4": "k"}
    )
    batch = apps.get_model("annotate", "Batch").objects.create(
        title="label layer4", created_by=user, state="published", reward=Decimal("0.25")
    )
    empty = apps.get_model("annotate", "Batch").objects.create(title="no tasks yet", created_by=user)
    tasks = [
        apps.get_model("annotate", "Task").objects.create(
            batch=batch,
            unit=unit,
            position=i,
            is_gold=i == 0,
            gold_category="object",
            gold_words=["dog"] if i == 0 else [],
        )
        for i, unit in enumerate(units)
    ]
    worker = apps.get_model("annotate", "Worker").objects.create(
        provider="local", external_id="alice", gold_total=1, gold_correct=1
    )
    now = timezone.now()
    assignment = apps.get_model("annotate", "Assignment").objects.create(
        task=tasks[0],
        worker=worker,
        status="submitted",
        slot=0,
        accepted_at=now,
        deadline=now + timedelta(minutes=30),
        submitted_at=now,
        gold_passed=True,
    )
    annotation = apps.get_model("annotate", "Annotation").objects.create(
        assignment=assignment,
        words="dog",
        category="object",
        rejected_ranks=[1],
        shown_count=2,
        precision=0.5,
    )
    return {
        "user": user.pk,
        "probe_set": probe_set.pk,
        "network": network.pk,
        "run": run.pk,
        "units": [u.pk for u in units],
        "images": [i.pk for i in images],
        "shard": shard.pk,
        "batch": batch.pk,
        "empty": empty.pk,
        "tasks": [t.pk for t in tasks],
        "worker": worker.pk,
        "assignment": assignment.pk,
        "annotation": annotation.pk,
    }


@pytest.mark.django_db(transaction=True)
def test_upgrade_keeps_every_row_and_reference() -> None:
    latest = _latest()
    try:
        ids = _old_rows(_migrate(OLD))
        _migrate(latest)
    finally:
        _migrate(latest)

    run = DissectionRun.objects.select_related("network", "probe_set", "created_by").get(pk=ids["run"])
    assert (run.name, run.network.pk, run.probe_set.pk, run.created_by.username) == (
        "resnet18 layer4",
        ids["network"],
        ids["probe_set"],
        "requester",
    )
    assert run.report == {"layer4": "runs/1/layer4/report/report.html"} and run.status == "done"
    assert ProbeSet.objects.get(pk=ids["probe_set"]).status == "ready"
    network = Network.objects.get(pk=ids["network"])
    assert (network.weights.name, network.status, network.layers) == ("networks/weights/r18.pt", "ready", [])
    units = list(Unit.objects.filter(pk__in=ids["units"]).order_by("channel"))
    assert [(u.pk, u.channel, u.label, u.concept_category) for u in units] == [
        (ids["units"][0], 0, "dog", "object"),
        (ids["units"][1], 1, "grass", "material"),
    ]
    assert sorted(UnitImage.objects.filter(unit__in=units).values_list("pk", flat=True)) == sorted(
        ids["images"]
    )
    assert Shard.objects.get(pk=ids["shard"]).result_keys == {"layer4": "k"}
    batch = Batch.objects.get(pk=ids["batch"])
    assert [t.unit_id for t in Task.objects.filter(batch=batch).order_by("position")] == ids["units"]
    assert [t.pk for t in Task.objects.filter(batch=batch).order_by("position")] == ids["tasks"]
    assignment = Assignment.objects.select_related("worker", "task__unit").get(pk=ids["assignment"])
    assert isinstance(assignment.worker, CrowdWorker) and assignment.worker.pk == ids["worker"]
    assert (assignment.worker.external_id, assignment.worker.gold_accuracy) == ("alice", 1.0)
    assert assignment.task.unit.label == "dog"
    annotation = Annotation.objects.get(pk=ids["annotation"])
    assert (annotation.assignment_id, annotation.words, annotation.rejected_ranks) == (
        ids["assignment"],
        "dog",
        [1],
    )
    default = Project.objects.get()
    assert default.name == "Default" and [u.username for u in default.members.all()] == ["requester"]
    assert run.project == network.project == ProbeSet.objects.get(pk=ids["probe_set"]).project == default
    assert batch.project == Batch.objects.get(pk=ids["empty"]).project == default
    # The database's own constraints still guard the moved tables: a duplicate unit is refused.
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Unit.objects.create(run=run, layer="layer4", channel=0)
    # New rows get fresh keys after the old ones (the sequences moved with their tables).
    fresh = Unit.objects.create(run=run, layer="layer4", channel=7)
    assert fresh.pk > max(ids["units"])
