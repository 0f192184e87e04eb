"""Runs survive outages, run as the audit ran them: real `celery` worker processes, a Redis of the test's own
(so it can be killed and restarted), PostgreSQL connections cut from the server side. Each run ends done with
the tally of an undisturbed run, or failed with the reason."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from django.core.management import call_command
from django.db import connection

from runs.models import DissectionRun, Shard, Unit
from tests.runs.conftest import LAYERS, _switch_broker, drain, tally_arrays, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services, pytest.mark.slow]
STALE_S = 2


class OwnRedis:
    """A redis-server on a free port that keeps nothing on disk, to kill and start again mid-test."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder, self.proc = folder, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (the machine's Redis package provides it)"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self._up, 20, "the test's own Redis to start")

    def _up(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url).ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    from workers.app import app

    server = OwnRedis(tmp_path)
    previous = app.conf.broker_url
    _switch_broker(app, server.url)
    try:
        yield server
    finally:
        server.kill()
        _switch_broker(app, previous)


def _sweep_until_finished(run: DissectionRun, workers: Any, timeout: float = 240) -> DissectionRun:
    """What Celery beat does in production: sweep every second until the run stops."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status not in ("queued", "running"):
            return run
        call_command("sweep_runs", "--stale-after", str(STALE_S), stdout=io.StringIO())
        time.sleep(1)
    wait_for(lambda: False, 0, "the run to finish", workers)
    raise AssertionError("unreachable")


Outcome = tuple[dict[str, dict[str, Any]], list[tuple[Any, ...]]]
"""A finished run's merged tallies (`tally_arrays`) and its units' (layer, channel, label, iou)."""


@pytest.fixture(scope="module")
def undisturbed() -> dict[int, Outcome]:
    """The outcome of an undisturbed run of the same network and probe set, by shard size: drained once per
    shard size in this module (a run is deterministic; each test's database is emptied, this is not)."""
    return {}


def _outcome(run: DissectionRun) -> Outcome:
    fields = ("layer", "channel", "label", "iou")
    return tally_arrays(run), list(Unit.objects.filter(run=run).values_list(*fields))


def _same_as_undisturbed(
    run: DissectionRun,
    launch: Callable[..., DissectionRun],
    shard_size: int,
    undisturbed: dict[int, Outcome],
) -> None:
    assert run.status == "done", run.error
    if shard_size not in undisturbed:
        undisturbed[shard_size] = _outcome(drain(launch("undisturbed", shard_size=shard_size)))
    (a, units), (b, reference_units) = _outcome(run), undisturbed[shard_size]
    for layer in LAYERS:
        for key in a[layer]:
            np.testing.assert_array_equal(a[layer][key], b[layer][key])
    assert units == reference_units


def test_launching_with_the_broker_down_queues_the_run_for_later(
    celery_workers, own_redis: OwnRedis, launch, staff_client, network_and_probe_set, undisturbed
) -> None:
    network, probe_set = network_and_probe_set
    response = staff_client.post(
        "/runs/new/",
        {
            "project": network.project_id,
            "name": "while down",
            "network": network.pk,
            "probe_set": probe_set.pk,
            "layers": "conv3, conv4",
            "shard_size": 32,
            "topk": 4,
            "semantics": "paper",
        },
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "task broker is unreachable" in page
    run = DissectionRun.objects.get(name="while down")
    assert (
        run.status == "queued" and staff_client.get(f"/runs/{run.pk}/status.json").json()["waits_for_broker"]
    )
    own_redis.start()
    celery_workers.start("w1", extra={"CELERY_BROKER_URL": own_redis.url})
    run = _sweep_until_finished(run, celery_workers)
    _same_as_undisturbed(run, launch, 32, undisturbed)


def test_a_redis_restart_that_loses_the_queue_is_swept_and_the_run_finishes(
    celery_workers, own_redis: OwnRedis, launch, undisturbed
) -> None:
    own_redis.start()
    run = launch("lost queue", shard_size=32)
    assert redis.Redis.from_url(own_redis.url).llen("gpu") == 5
    own_redis.kill()
    own_redis.start()  # no persistence: the five queued scan shards are gone
    assert redis.Redis.from_url(own_redis.url).llen("gpu") == 0
    celery_workers.start("w1", extra={"CELERY_BROKER_URL": own_redis.url})
    time.sleep(STALE_S + 1)
    run = _sweep_until_finished(run, celery_workers)
    _same_as_undisturbed(run, launch, 32, undisturbed)


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="cuts PostgreSQL connections (CI sets DATABASE_URL)"
)
def test_database_connections_cut_for_seconds_mid_run_delay_the_run_but_do_not_break_it(
    celery_workers, launch, undisturbed
) -> None:
    celery_workers.start("w1")
    run = launch("cut", shard_size=16)
    wait_for(
        lambda: Shard.objects.filter(run=run, status="done").exists(), 240, "a first shard", celery_workers
    )
    cut: list[int] = []
    stop = threading.Event()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        test_pid = cursor.fetchone()[0]

    def cut_connections() -> None:
        from django.db import connections

        with connections["default"].cursor() as cursor:
            while not stop.is_set():
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
                    [test_pid],
                )
                cut.extend(row[0] for row in cursor.fetchall() if row[0])
                time.sleep(0.1)
        connections["default"].close()

    cutter = threading.Thread(target=cut_connections)
    cutter.start()
    time.sleep(6)
    stop.set()
    cutter.join()
    assert cut, "no worker connection was cut"
    wait_for(lambda: DissectionRun.objects.get(pk=run.pk).status != "running", 300, "the run", celery_workers)
    run.refresh_from_db()
    assert "OperationalError" in celery_workers.log("w1") or "terminating connection" in celery_workers.log(
        "w1"
    )
    _same_as_undisturbed(run, launch, 16, undisturbed)
