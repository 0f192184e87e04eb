"""Real `celery -A workers worker` subprocesses on Redis: a run launched from the requester page completes,
survives a SIGKILLed worker with the same tally, and stops when cancelled."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import numpy as np
import pytest
import redis
from django.test import Client

from runs.models import DissectionRun, Shard, Unit, UnitImage
from tests.factories import logged_in, staff_user
from tests.runs.conftest import LAYERS, TOPK, drain, tally_arrays, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services, pytest.mark.slow]


@pytest.fixture
def staff_client(django_user_model) -> Client:
    return logged_in(staff_user(django_user_model, "requester"))


def test_run_launched_from_the_page_completes_on_a_worker(
    celery_workers, staff_client, network_and_probe_set, media: Path, redis_broker: str
) -> None:
    network, probe_set = network_and_probe_set
    queue = redis.Redis.from_url(redis_broker)
    response = staff_client.post(
        "/runs/new/",
        {
            "project": network.project_id,
            "name": "page run",
            "network": network.pk,
            "probe_set": probe_set.pk,
            "layers": "conv3, conv4",
            "shard_size": 64,
            "topk": TOPK,
            "semantics": "paper",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    run = DissectionRun.objects.get(name="page run")
    assert response["Location"] == f"/runs/{run.pk}/"
    assert queue.llen("gpu") == 3  # the scan shards, sent once their rows were committed
    celery_workers.start("w1")
    wait_for(
        lambda: DissectionRun.objects.get(pk=run.pk).status not in ("queued", "running"),
        240,
        "the run to finish",
        celery_workers,
    )
    run.refresh_from_db()
    assert run.status == "done", run.error
    status = staff_client.get(f"/runs/{run.pk}/status.json").json()
    assert status["status"] == "done" and status["percent"] == 100 and status["finished"]
    units = Unit.objects.filter(run=run)
    assert units.count() == 2 * 128 and set(units.values_list("layer", flat=True)) == set(LAYERS)
    assert units.exclude(label="").count() == units.count() and units.filter(interpretable=True).exists()
    unit = units.order_by("layer", "channel").first()
    assert unit is not None and (media / unit.strip.name).is_file()
    assert not UnitImage.objects.filter(unit__run=run).exclude(image="").exists()  # tiles come when wanted
    page = staff_client.get(f"/runs/{run.pk}/").content.decode()
    reports = re.findall(r'href="([^"]+/report\.html)"', page)
    assert len(reports) == 2
    report = staff_client.get(reports[0])
    assert report.status_code == 200 and b"unit" in b"".join(report.streaming_content)
    assert f"?run={run.pk}&amp;layer=conv3" in page


def test_a_killed_worker_hands_its_shard_to_another_and_the_tally_is_unchanged(
    celery_workers, launch
) -> None:
    fast = {"CELERY_VISIBILITY_TIMEOUT": "3", "CELERY_RESTORE_INTERVAL": "1"}
    first = celery_workers.start("doomed", extra=fast)
    run = launch("interrupted", shard_size=32)
    wait_for(
        lambda: Shard.objects.filter(run=run, phase="render", status="running").exists(),
        240,
        "a render shard to start",
        celery_workers,
    )
    first.send_signal(signal.SIGKILL)
    first.wait()
    run.refresh_from_db()
    assert run.status == "running" and not Unit.objects.filter(run=run).exists()
    celery_workers.start("rescuer", extra=fast)
    wait_for(
        lambda: DissectionRun.objects.get(pk=run.pk).status != "running",
        240,
        "the run to finish",
        celery_workers,
    )
    run.refresh_from_db()
    assert run.status == "done", run.error
    assert Shard.objects.filter(run=run, deliveries__gte=2).exists()
    reference = drain(launch("uninterrupted", shard_size=32))
    a, b = tally_arrays(run), tally_arrays(reference)
    for layer in LAYERS:
        for key in a[layer]:
            np.testing.assert_array_equal(a[layer][key], b[layer][key])
    assert list(Unit.objects.filter(run=run).values_list("layer", "channel", "label", "iou")) == list(
        Unit.objects.filter(run=reference).values_list("layer", "channel", "label", "iou")
    )


def test_cancelling_a_running_run_stops_its_shards(
    celery_workers, launch, staff_client, redis_broker: str
) -> None:
    celery_workers.start("w1")
    run = launch("to cancel", shard_size=1)  # 160 shards: the cancel lands long before the last one
    wait_for(
        lambda: Shard.objects.filter(run=run, status="done").exists(), 240, "a first shard", celery_workers
    )
    response = staff_client.post(f"/runs/{run.pk}/cancel/", {"confirm": "yes"})
    assert response.status_code == 302
    client = redis.Redis.from_url(redis_broker)
    wait_for(
        lambda: client.llen("gpu") == 0 and not Shard.objects.filter(run=run, status="running").exists(),
        120,
        "the worker to drop the remaining shards",
        celery_workers,
    )
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert Shard.objects.filter(run=run, status="done").count() < Shard.objects.filter(run=run).count()
    assert not Shard.objects.filter(run=run, phase="render").exists()
    assert not Unit.objects.filter(run=run).exists()
    assert "Cancelled" in staff_client.get(f"/runs/{run.pk}/").content.decode()
