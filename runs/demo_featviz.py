"""Demo extra: feature visualizations of the demo run's last layer (conv4 of the toy network), made by the
same sharded job the run page launches, so the dashboard and the run page show its progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from runs.demo import DEMO_RUN
from runs.errors import RunError
from runs.featviz import featviz_index, featviz_launch, featviz_link, job_key
from runs.models import DissectionRun, Job, Project

DEMO_LAYER = "conv4"
# 128 units of the toy's conv4 at 64 px: 64 steps at Adam 0.2 take about two minutes on two CPU cores, and
# most units' images then beat their best probe image (README).
DEMO_STEPS = 64
DEMO_SIZE = 64
DEMO_LR = 0.2
WAIT_S = 30 * 60


def demo_featviz_build(
    *,
    project: Project,
    user: Any,
    progress: Callable[[int, int, str], None],
    steps: int = DEMO_STEPS,
    size: int = DEMO_SIZE,
    poll_s: float = 1.0,
) -> str:
    """Visualize conv4 of the demo run through the job (skipped when done); returns the run page's section."""
    run = DissectionRun.objects.filter(project=project, name=DEMO_RUN).first()
    if run is None or run.status != DissectionRun.Status.DONE:
        raise RunError(f"the demo run {DEMO_RUN!r} is not finished; the demo builds it before its extras")
    link = featviz_link(run.pk, DEMO_LAYER)
    job = Job.objects.filter(project=project, key=job_key(run.pk, DEMO_LAYER)).first()
    if job is not None and job.status == Job.Status.DONE and featviz_index(run_id=run.pk, layer=DEMO_LAYER):
        return link
    job = featviz_launch(run=run, layer=DEMO_LAYER, steps=steps, size=size, lr=DEMO_LR)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job.refresh_from_db()
        progress(job.done, job.total, job.note)
        if job.status == Job.Status.DONE:
            return link
        if job.status == Job.Status.FAILED:
            raise RunError(f"feature visualization failed: {job.error}")
        time.sleep(poll_s)
    raise RunError(f"feature visualization of {DEMO_LAYER} did not finish within {WAIT_S // 60} minutes")
