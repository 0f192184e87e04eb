"""Fixtures for the runs' tests: a registered toy network and synthetic probe set, a synchronous driver
that runs a run's shards in this process, and real `celery -A workers worker` subprocesses on Redis.

Worker subprocesses must see the test's database: on PostgreSQL that is the test database itself; on SQLite
(whose test database is in memory) `shared_db` points this process at a migrated file database for the test
and hands the same file to the workers. Redis db 11 is kept for these tests and flushed around each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files import File
from django.db import connections

from runs import services as runs
from runs.models import DissectionRun, Network, ProbeSet, Shard
from runs.storage import report_prefix, store_bytes
from tests.conftest import PROBE_IMAGES, PROBE_SIZE
from tests.dissection.test_featviz_report import minimal_result_json
from tests.factories import run_create, shared_project, unit_create

REPO = Path(__file__).resolve().parents[2]
# One Redis database per pytest-xdist worker (gw0 -> 11, gw1 -> 12, ...), flushed by the tests that use it.
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = os.environ.get("UNITSCOPE_TEST_REDIS", f"redis://127.0.0.1:6379/{11 + _XDIST_INDEX}")
LAYERS = ["conv3", "conv4"]
TOPK = 4


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.WORK_DIR = tmp_path / "work"
    return settings.MEDIA_ROOT


@pytest.fixture
def demo_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, probe_set_dir: Path, media: Path) -> Path:
    """The demo's cache (DEMO_CACHE_DIR) holding the session's probe set, which is built with the demo's
    settings: what the demo would build first is there already."""
    from runs import demo

    assert (demo.PROBE_IMAGES, demo.PROBE_SIZE) == (PROBE_IMAGES, PROBE_SIZE)
    cache = tmp_path / "demo-cache"
    shutil.copytree(probe_set_dir, cache / "probe-set")
    monkeypatch.setenv("DEMO_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def network_and_probe_set(media: Path, toy_weights: Path, probe_set_dir: Path) -> tuple[Network, ProbeSet]:
    project = shared_project()
    with toy_weights.open("rb") as handle:
        network = runs.network_register(
            project=project,
            name="toy",
            architecture="toy",
            weights=File(handle, name="toy.pt"),
            inspect_now=True,
        )
    probe_set = runs.probe_set_register(
        project=project, name="synthetic", path=str(probe_set_dir), inspect_now=True
    )
    return network, probe_set


@pytest.fixture
def launch(network_and_probe_set: tuple[Network, ProbeSet]) -> Callable[..., DissectionRun]:
    network, probe_set = network_and_probe_set

    def launch(name: str = "toy run", **kwargs: Any) -> DissectionRun:
        options = {"layers": LAYERS, "shard_size": 48, "topk": TOPK, **kwargs}
        return runs.run_launch(
            project=network.project, name=name, network=network, probe_set=probe_set, **options
        )

    return launch


def drain(run: DissectionRun, order: Callable[[list[int]], list[int]] = lambda ids: ids) -> DissectionRun:
    """Run every pending shard of `run` in this process until the run stops (what one worker would do)."""
    from runs.tasks import dissect_shard

    for _ in range(100):
        run.refresh_from_db()
        if run.status not in runs.ACTIVE:
            return run
        pending = list(
            Shard.objects.filter(run=run)
            .exclude(status=Shard.Status.DONE)
            .order_by("phase", "layer", "index")
            .values_list("pk", flat=True)
        )
        assert pending, f"run {run.name} is {run.status} with no pending shard"
        for shard_id in order(pending):
            dissect_shard.run(shard_id)
    raise AssertionError("run did not finish")


# --- Redis and worker subprocesses ------------------------------------------------------------------------


@pytest.fixture
def redis_broker(settings: Any) -> Iterator[str]:
    """Point this process's Celery app at Redis db 11 (flushed before and after)."""
    import redis

    from workers.app import app

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    previous = app.conf.broker_url
    _switch_broker(app, REDIS_URL)
    try:
        yield REDIS_URL
    finally:
        _switch_broker(app, previous)
        client.flushdb()


def _switch_broker(app: Any, url: str) -> None:
    """Send through `url` from now on with fresh connections: pooled ones remember queues as declared, but
    the flushed Redis db no longer holds their bindings, so a message sent through them would be dropped."""
    from kombu import pools

    pools.reset()
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def shared_db(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    """A DATABASE_URL that worker subprocesses share with this test (see the module docstring)."""
    connection = connections["default"]
    if connection.vendor != "sqlite":
        s = connection.settings_dict
        yield f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
        return
    path = tmp_path / "shared.sqlite3"
    url = f"sqlite:///{path}"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO,
        check=True,
        env={**os.environ, "DATABASE_URL": url},
    )
    original = connections["default"]
    shared = original.__class__({**original.settings_dict, "NAME": str(path), "TEST": {}}, "default")
    connections["default"] = shared
    connections.settings["default"] = shared.settings_dict  # threads started meanwhile connect here too
    try:
        yield url
    finally:
        shared.close()
        connections.settings["default"] = original.settings_dict
        connections["default"] = original


class Workers:
    """Start and kill `celery -A workers worker` subprocesses for one test."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir, self.procs = env, log_dir, []

    def start(
        self, name: str, *, queues: str = "gpu,celery", extra: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "-Q",
                queues,
                "-c",
                "1",
                "-P",
                "solo",
                "-n",
                f"{name}@%h",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "INFO",
            ],
            cwd=REPO,
            env={**self.env, **(extra or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def celery_workers(shared_db: str, redis_broker: str, media: Path, tmp_path: Path) -> Iterator[Workers]:
    env = {
        **os.environ,
        "DATABASE_URL": shared_db,
        "CELERY_BROKER_URL": redis_broker,
        "MEDIA_ROOT": str(media),
        "WORK_DIR": str(tmp_path / "worker-work"),
        "TORCH_NUM_THREADS": "1",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("S3_BUCKET", None)
    workers = Workers(env, tmp_path)
    try:
        yield workers
    finally:
        workers.stop_all()


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, workers: Workers | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    logs = (
        ""
        if workers is None
        else "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in workers.log_dir.glob("*.log")
        )
    )
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")


def tally_arrays(run: DissectionRun) -> dict[str, dict[str, Any]]:
    """The merged tally of every layer of a finished run, read back from storage."""
    from dissection.states import TallyState
    from runs.pipeline import load_state
    from runs.storage import merged_key

    out = {}
    for layer in run.layers:
        state = load_state(TallyState, merged_key(run.pk, layer, "tally"))
        out[layer] = {
            "intersect": state.intersect,
            "truth": state.truth,
            "activation": state.activation,
            "thresholds": state.thresholds,
        }
    return out


FEATVIZ_LAYER = "conv4"
FEATVIZ_CHANNELS = (0, 1, 2, 3)


@pytest.fixture
def featviz_run(network_and_probe_set: tuple[Network, ProbeSet]) -> DissectionRun:
    """A finished run of the toy network whose conv4 holds four units, with its stored report: what a
    feature-visualization job starts from."""
    network, probe_set = network_and_probe_set
    run = run_create(
        "featviz run",
        network=network,
        probe_set=probe_set,
        status=DissectionRun.Status.DONE,
        layers=[FEATVIZ_LAYER],
    )
    for channel in FEATVIZ_CHANNELS:
        unit_create(run, channel, FEATVIZ_LAYER, images=2, label="red")
    prefix = report_prefix(run.pk, FEATVIZ_LAYER)
    store_bytes(f"{prefix}/result.json", json.dumps(minimal_result_json(len(FEATVIZ_CHANNELS))).encode())
    store_bytes(f"{prefix}/report.html", b"<p>before</p>")
    run.report = {FEATVIZ_LAYER: f"{prefix}/report.html"}
    run.save()
    return run
