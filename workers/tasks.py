"""Celery tasks: thin wrappers that take ids and call `workers.dissect` / `workers.gallery`.

Both run on the `gpu` queue (CELERY_TASK_ROUTES). With acks late and reject-on-worker-lost a shard whose
worker dies is delivered again; `annotate.services.runs.shard_start` counts deliveries and fails the run past
SHARD_MAX_DELIVERIES, and a repeated shard never counts twice.
"""
from __future__ import annotations

import os

from workers.app import app


@app.task(name="workers.tasks.dissect_shard", ignore_result=True)
def dissect_shard(shard_id: int) -> None:
    from workers.dissect import shard_run, torch_threads

    torch_threads(int(os.environ.get("TORCH_NUM_THREADS", "0") or 0))
    shard_run(shard_id)


@app.task(name="workers.tasks.cam_gallery", ignore_result=True)
def cam_gallery(run_id: int, images: int = 8) -> None:
    from workers.gallery import gallery_build

    gallery_build(run_id=run_id, images=images)
