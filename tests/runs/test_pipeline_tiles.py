"""A run stores strips and maps, not full-size tiles; `unit_tiles_ensure` makes a unit's tiles once, when a
batch is created from it or a worker first asks for an image."""

from __future__ import annotations

import io
import json
from pathlib import PurePosixPath

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image

from annotate.services.batches import batch_create
from dissection.broden import load_probe_set
from dissection.render import encode_jpeg, unit_tiles
from runs import services as runs
from runs.models import DissectionRun, Unit, UnitImage
from tests.factories import staff_user
from tests.runs.conftest import TOPK, drain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def done_run(launch) -> DissectionRun:
    run = drain(launch())
    assert run.status == DissectionRun.Status.DONE, run.error
    return run


def _expected_tile(unit: Unit, rank: int) -> bytes:
    """What the tile must hold: the tile rule on the stored maps and the probe image (the rule itself is held
    against the tiles the run used to write in tests/dissection/test_thumbnails.py)."""
    prefix = str(PurePosixPath(unit.run.report[unit.layer]).parent)
    with default_storage.open(f"{prefix}/maps.npy", "rb") as handle:
        maps = np.load(io.BytesIO(handle.read()))
    with default_storage.open(f"{prefix}/result.json", "rb") as handle:
        entry = json.load(handle)["units"][unit.channel]
    probe = load_probe_set(unit.run.probe_set.path)
    index = entry["images"][rank]["index"]
    tile = unit_tiles(probe.load_image(index)[None], maps[unit.channel, rank : rank + 1], entry["threshold"])
    return encode_jpeg(tile[0])


def test_tiles_are_made_once_on_demand(done_run: DissectionRun) -> None:
    units = list(Unit.objects.filter(run=done_run, layer="conv4").order_by("channel")[:2])
    assert all(default_storage.exists(unit.strip.name) for unit in units)
    assert not UnitImage.objects.filter(unit__run=done_run).exclude(image="").exists()
    assert runs.unit_tiles_ensure(unit_ids=[u.pk for u in units]) == 2 * TOPK
    images = list(UnitImage.objects.filter(unit__in=units).order_by("unit__channel", "rank"))
    names = [image.image.name for image in images]
    assert len(names) == 2 * TOPK and all(default_storage.exists(name) for name in names)
    for image in images:
        with default_storage.open(image.image.name, "rb") as handle:
            assert handle.read() == _expected_tile(image.unit, image.rank)
    assert runs.unit_tiles_ensure(unit_ids=[u.pk for u in units]) == 0
    assert [
        i.image.name for i in UnitImage.objects.filter(unit__in=units).order_by("unit__channel", "rank")
    ] == names
    assert not UnitImage.objects.filter(unit__run=done_run).exclude(unit__in=units).exclude(image="").exists()


def test_a_batch_makes_its_units_tiles_and_a_worker_gets_a_missing_one(
    done_run: DissectionRun, django_user_model, client
) -> None:
    units = list(Unit.objects.filter(run=done_run, layer="conv4").order_by("channel")[:3])
    batch = batch_create(
        title="t", units=units, images_per_task=TOPK, created_by=staff_user(django_user_model)
    )
    assert not UnitImage.objects.filter(unit__in=units, image="").exists()
    task = batch.tasks.order_by("position").first()
    UnitImage.objects.filter(unit=task.unit).update(image="")  # e.g. made before tiles were recorded
    response = client.get(reverse("annotate:task_image", args=[task.public_id, 1]))
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    served = b"".join(response.streaming_content)
    assert served in {_expected_tile(task.unit, rank) for rank in range(TOPK)}
    with Image.open(io.BytesIO(served)) as image:
        assert image.size == (64, 64)
    assert not UnitImage.objects.filter(unit=task.unit, image="").exists()
