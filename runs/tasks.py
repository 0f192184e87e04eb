"""Celery tasks for runs: thin wrappers that take ids and call the pipeline or a service.

Shards, CAM galleries and feature visualizations run on the `gpu` queue (CELERY_TASK_ROUTES), the
registration checks and the sweep on the default queue. With acks late and reject-on-worker-lost a shard whose
worker dies is delivered again; `runs.services.shard_start` counts deliveries and fails the run past
SHARD_MAX_DELIVERIES, and a repeated shard never counts twice.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Task
from django.db import InterfaceError, OperationalError

from workers.app import app


class DatabaseRetrying(Task):
    """A database that is unreachable for a while (a restart, a failover, connections cut) makes a task wait
    and try again, backing off up to a minute, rather than fail its run; past the retries the sweep takes
    over."""

    autoretry_for = (OperationalError, InterfaceError)
    retry_backoff = 2
    retry_backoff_max = 60
    max_retries = 30
    ignore_result = True


@app.task(name="runs.tasks.dissect_shard", base=DatabaseRetrying, bind=True)
def dissect_shard(self: Any, shard_id: int) -> None:
    from runs.pipeline import shard_run, torch_threads

    torch_threads(int(os.environ.get("TORCH_NUM_THREADS", "0") or 0))
    shard_run(shard_id, count_delivery=not self.request.retries)


@app.task(name="runs.tasks.cam_gallery", ignore_result=True)
def cam_gallery(run_id: int, images: int = 8) -> None:
    from runs.gallery import gallery_build

    gallery_build(run_id=run_id, images=images)


@app.task(name="runs.tasks.gan_effects", ignore_result=True)
def gan_effects(run_id: int) -> None:
    """The causal effects of a finished generator run (queued when it is published)."""
    from runs.effects import gan_effects_build
    from runs.pipeline import torch_threads

    torch_threads(int(os.environ.get("TORCH_NUM_THREADS", "0") or 0))
    gan_effects_build(run_id=run_id)


@app.task(name="runs.tasks.featviz_shard", base=DatabaseRetrying)
def featviz_shard(run_id: int, layer: str, index: int, token: str) -> None:
    """One group of units' feature visualizations (`runs.featviz`); a repeated delivery rewrites its keys."""
    from runs.featviz import featviz_shard_run
    from runs.pipeline import torch_threads

    torch_threads(int(os.environ.get("TORCH_NUM_THREADS", "0") or 0))
    featviz_shard_run(run_id=run_id, layer=layer, index=index, token=token)


@app.task(name="runs.tasks.featviz_merge", base=DatabaseRetrying)
def featviz_merge(run_id: int, layer: str, token: str) -> None:
    """A feature-visualization job's merge alone, queued by the sweep when its last merge was lost."""
    from runs.featviz import featviz_merge_run

    featviz_merge_run(run_id=run_id, layer=layer, token=token)


@app.task(name="runs.tasks.runs_sweep", base=DatabaseRetrying)
def runs_sweep() -> None:
    from runs.services import runs_sweep

    runs_sweep()


@app.task(name="runs.tasks.network_inspect", base=DatabaseRetrying)
def network_inspect(network_id: int) -> None:
    from runs.services import network_inspect

    network_inspect(network_id=network_id)


@app.task(name="runs.tasks.probe_set_convert", base=DatabaseRetrying)
def probe_set_convert(probe_set_id: int) -> None:
    """A registered dataset converted to the Broden format (`runs.services.probe_set_convert`)."""
    from runs.services import probe_set_convert

    probe_set_convert(probe_set_id=probe_set_id)


@app.task(name="runs.tasks.probe_set_inspect", base=DatabaseRetrying)
def probe_set_inspect(probe_set_id: int) -> None:
    from runs.services import probe_set_inspect

    probe_set_inspect(probe_set_id=probe_set_id)
