"""Feature visualization as a sharded job: launch → shards on the worker → stored PNGs and featviz.json, the
job's progress, repeated and superseded deliveries, permissions, and the pages that show the images."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image

from annotate import services as annotate_services
from runs import featviz
from runs.demo import DEMO_RUN
from runs.models import DissectionRun, Job, Network, ProbeSet, Unit
from runs.tasks import featviz_shard
from tests.factories import logged_in, run_create, staff_user, unit_create
from tests.runs.conftest import FEATVIZ_CHANNELS, FEATVIZ_LAYER

LAYER = FEATVIZ_LAYER
CHANNELS = FEATVIZ_CHANNELS
BEST = 10.0  # unit_create's rank-0 image activation: each unit's best probe image
FAST = {"steps": 3, "size": 32, "units_per_shard": 2, "lr": 0.2}

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The featviz tasks a launch queues (the broker's side), to be run by `deliver`."""
    queued: list[tuple[Any, ...]] = []

    def send(task: str, *args: Any) -> bool:
        assert task == "featviz_shard"
        queued.append(args)
        return True

    monkeypatch.setattr(featviz, "task_send", send)
    return queued


def deliver(args: tuple[Any, ...]) -> None:
    """What the gpu worker that takes the queued task does."""
    featviz_shard.run(*args)


@pytest.fixture
def run(featviz_run: DissectionRun) -> DissectionRun:
    return featviz_run


def _launch(run: DissectionRun, capture: Callable[..., Any], **options: Any) -> Job:
    with capture(execute=True):
        return featviz.featviz_launch(run=run, layer=LAYER, **(FAST | options))


def _unit_activation_max(model: torch.nn.Module, png: bytes, channel: int) -> float:
    """The slow way: the stored 8-bit PNG through the network, the unit's map at conv4, its maximum."""
    from dissection.featviz.render import layer_reader, normalize

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32) / 255
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    with torch.no_grad(), layer_reader(model, LAYER) as read:
        return float(read(normalize(image))[0, channel].max())


def test_launch_shards_store_images_and_featviz_json(
    run: DissectionRun, sent: list[tuple[Any, ...]], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    from runs.networks import network_model

    job = _launch(run, django_capture_on_commit_callbacks)
    assert job.key == f"featviz:{run.pk}:{LAYER}" and job.status == Job.Status.RUNNING
    assert job.total == 2 * FAST["steps"] and len(sent) == 2  # two groups of two units, one task each
    assert [args[:3] for args in sent] == [(run.pk, LAYER, 0), (run.pk, LAYER, 1)]
    unit = Unit.objects.get(run=run, layer=LAYER, channel=2)
    assert featviz.featviz_keys(unit=unit) == []

    deliver(sent[1])  # the second group first: shards finish in any order
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.note == "groups of units done: 1/2"
    assert job.done == FAST["steps"]
    assert featviz.featviz_keys(unit=unit) == [f"runs/{run.pk}/{LAYER}/featviz/unit-0002-0.png"]
    assert featviz.featviz_keys(unit=Unit.objects.get(run=run, layer=LAYER, channel=0)) == []

    deliver(sent[0])
    job.refresh_from_db()
    assert job.status == Job.Status.DONE and job.done == job.total and job.link.endswith("#featviz")
    index = featviz.featviz_index(run_id=run.pk, layer=LAYER)
    assert index is not None and [u["channel"] for u in index["units"]] == list(CHANNELS)
    model = network_model(run.network)
    for entry in index["images"]:
        key = f"runs/{run.pk}/{LAYER}/featviz/{entry['file']}"
        assert entry["file"] == f"unit-{entry['channel']:04d}-0.png"
        with default_storage.open(key, "rb") as handle:
            png = handle.read()
        assert Image.open(io.BytesIO(png)).size == (32, 32)
        slow = _unit_activation_max(model, png, entry["channel"])
        assert entry["activation"]["max"] == pytest.approx(slow, rel=1e-4, abs=1e-5)
        assert entry["relative_activation"] == pytest.approx(slow / BEST, rel=1e-4, abs=1e-6)
    relative = [u["relative_activation"] for u in index["units"]]
    assert index["summary"]["share_above_1"] == pytest.approx(np.mean(np.array(relative) > 1))
    assert index["summary"]["median_relative_activation"] == pytest.approx(float(np.median(relative)))
    with default_storage.open(run.report[LAYER], "rb") as handle:
        report = handle.read().decode()
    assert report.count('src="../featviz/unit-') == len(CHANNELS)


def test_a_repeated_shard_rewrites_the_same_keys(
    run: DissectionRun, sent: list[tuple[Any, ...]], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    _launch(run, django_capture_on_commit_callbacks, units_per_shard=4)
    deliver(sent[0])
    key = f"runs/{run.pk}/{LAYER}/featviz/unit-0001-0.png"
    first = default_storage.open(key, "rb").read()
    listing = sorted(default_storage.listdir(f"runs/{run.pk}/{LAYER}/featviz")[1])
    deliver(sent[0])  # the broker hands the task out again (its worker died before acknowledging)
    assert default_storage.open(key, "rb").read() == first
    assert sorted(default_storage.listdir(f"runs/{run.pk}/{LAYER}/featviz")[1]) == listing
    index = featviz.featviz_index(run_id=run.pk, layer=LAYER)
    assert index is not None and len(index["images"]) == len(CHANNELS)
    assert Job.objects.get(key=f"featviz:{run.pk}:{LAYER}").status == Job.Status.DONE


def test_a_relaunch_drops_the_old_plans_shards(
    run: DissectionRun, sent: list[tuple[Any, ...]], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    _launch(run, django_capture_on_commit_callbacks, units_per_shard=4)
    _launch(run, django_capture_on_commit_callbacks, units_per_shard=4, images=2)
    old, new = sent
    deliver(old)
    assert featviz.featviz_index(run_id=run.pk, layer=LAYER) is None
    deliver(new)
    unit = Unit.objects.get(run=run, layer=LAYER, channel=3)
    prefix = f"runs/{run.pk}/{LAYER}/featviz"
    assert featviz.featviz_keys(unit=unit) == [f"{prefix}/unit-0003-0.png", f"{prefix}/unit-0003-1.png"]


@pytest.mark.parametrize(
    "options,message",
    [
        ({"layer": "conv9"}, "has no layer 'conv9'"),
        ({"steps": 0}, "Steps: 0 is outside"),
        ({"images": 9}, "Images per unit: 9 is outside"),
    ],
)
def test_launch_refuses_bad_settings(run: DissectionRun, options: dict[str, Any], message: str) -> None:
    from runs.errors import RunError

    with pytest.raises(RunError, match=message):
        featviz.featviz_launch(run=run, **({"layer": LAYER} | options))


def test_launch_refuses_a_generator_run_and_its_page_offers_no_form(run: DissectionRun) -> None:
    from runs.errors import RunError
    from runs.models import Network

    Network.objects.filter(pk=run.network_id).update(kind=Network.Kind.GENERATOR)
    run.refresh_from_db()
    with pytest.raises(RunError, match="is a generator"):
        featviz.featviz_launch(run=run, layer=LAYER)
    assert not Job.objects.exists()


def test_launch_from_the_run_page_is_staff_project_scoped_and_csrf_protected(
    run: DissectionRun, sent: list[tuple[Any, ...]], django_user_model: Any
) -> None:
    from runs.models import Project

    url = f"/runs/{run.pk}/featviz/"
    data = {"layer": LAYER, "steps": "3", "size": "32", "images": "1"}
    assert Client().post(url, data).status_code == 302  # to the login page
    assert not Job.objects.exists()
    outsider = staff_user(django_user_model, "other", project=Project.objects.create(name="Other"))
    assert logged_in(outsider).post(url, data).status_code == 404
    member = staff_user(django_user_model)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(member)
    assert strict.post(url, data).status_code == 403
    client = logged_in(member)
    assert client.get(url).status_code == 405
    bad = client.post(url, data | {"size": "4"}, follow=True)
    assert "Feature visualization not queued. Size:" in bad.content.decode()
    assert not Job.objects.exists()
    response = client.post(url, data)
    assert response.status_code == 302 and response.url.endswith(f"?layer={LAYER}#featviz")
    assert Job.objects.get().key == f"featviz:{run.pk}:{LAYER}"
    page = client.get(response.url).content.decode()
    assert 'id="featviz"' in page
    assert 'aria-label="Feature visualizations of conv4"' in page and "groups of units done: 0/1" in page


@pytest.fixture
def visualized(
    run: DissectionRun, sent: list[tuple[Any, ...]], django_capture_on_commit_callbacks: Callable[..., Any]
) -> DissectionRun:
    _launch(run, django_capture_on_commit_callbacks, units_per_shard=4)
    deliver(sent[0])
    return run


def test_media_of_featviz_only_for_project_members(visualized: DissectionRun, django_user_model: Any) -> None:
    from runs.models import Project

    key = f"runs/{visualized.pk}/{LAYER}/featviz/unit-0000-0.png"
    member = logged_in(staff_user(django_user_model))
    response = member.get(f"/media/{key}")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    outsider = staff_user(django_user_model, "other", project=Project.objects.create(name="Other"))
    assert logged_in(outsider).get(f"/media/{key}").status_code == 404
    assert Client().get(f"/media/{key}").status_code == 302


def test_unit_and_run_pages_show_the_images_beside_the_top_images(
    visualized: DissectionRun, staff_client: Client
) -> None:
    unit = Unit.objects.get(run=visualized, layer=LAYER, channel=1)
    index = featviz.featviz_index(run_id=visualized.pk, layer=LAYER)
    assert index is not None
    relative = next(u["relative_activation"] for u in index["units"] if u["channel"] == 1)
    page = staff_client.get(f"/units/{unit.pk}/").content.decode()
    top, optimized = page.index('id="images"'), page.index('id="featviz"')
    assert top < optimized
    assert f'src="/media/runs/{visualized.pk}/{LAYER}/featviz/unit-0001-0.png"' in page[optimized:]
    assert f"{relative:.2f}×" in page and "Selectivity" in page
    run_page = staff_client.get(f"/runs/{visualized.pk}/?layer={LAYER}").content.decode()
    assert run_page.count(f"/media/runs/{visualized.pk}/{LAYER}/featviz/unit-") == len(CHANNELS)
    assert "Beat their best probe image" in run_page


@pytest.mark.parametrize("show", [True, False])
def test_the_worker_page_shows_them_only_if_the_batch_says_so(visualized: DissectionRun, show: bool) -> None:
    units = list(Unit.objects.filter(run=visualized).order_by("channel"))
    batch = annotate_services.batch_create(title="Label", units=units, images_per_task=2, show_featviz=show)
    annotate_services.batch_publish(batch=batch)
    task = batch.tasks.order_by("position").first()
    page = Client().get(f"/w/task/{task.public_id}/").content.decode()
    image_url = f"/w/task/{task.public_id}/featviz/0/"
    assert (image_url in page) is show
    assert "featviz/unit-" not in page and f"runs/{visualized.pk}" not in page and "conv4" not in page
    response = Client().get(image_url)
    if show:
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert "Content-Disposition" not in response
    else:
        assert response.status_code == 404
    assert Client().get(f"/w/task/{task.public_id}/featviz/1/").status_code == 404


@pytest.fixture
def synchronous_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """Each queued featviz task runs at once (the demo's in-process worker, without the thread)."""
    ran: list[tuple[Any, ...]] = []

    def send(task: str, *args: Any) -> bool:
        ran.append(args)
        deliver(args)
        return True

    monkeypatch.setattr(featviz, "task_send", send)
    yield ran


@pytest.mark.django_db(transaction=True)
def test_the_demo_builder_visualizes_the_demo_runs_last_layer(
    network_and_probe_set: tuple[Network, ProbeSet], synchronous_worker: list[tuple[Any, ...]]
) -> None:
    from runs.demo_featviz import demo_featviz_build
    from tests.factories import shared_project

    network, probe_set = network_and_probe_set
    project = shared_project()
    run = run_create(DEMO_RUN, network=network, probe_set=probe_set, status=DissectionRun.Status.DONE)
    for channel in CHANNELS:
        unit_create(run, channel, LAYER, images=1)
    reports: list[tuple[int, int, str]] = []

    def progress(done: int, total: int, note: str) -> None:
        reports.append((done, total, note))

    link = demo_featviz_build(project=project, user=None, progress=progress, steps=2, size=32, poll_s=0)
    assert link == f"/runs/{run.pk}/?layer=conv4#featviz"
    assert reports[-1][0] == reports[-1][1] == 2 and len(synchronous_worker) == 1
    assert featviz.featviz_keys(unit=Unit.objects.get(run=run, channel=3))
    assert demo_featviz_build(project=project, user=None, progress=progress, steps=2, size=32) == link
    assert len(synchronous_worker) == 1  # built once
