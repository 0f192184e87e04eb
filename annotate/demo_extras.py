"""The demo's slow parts (a training series, a toy GAN, feature visualizations, a 2AFC study), built after the
server is up so that `make run` serves within its budget: each is a `runs.Job` of the demo project whose
progress and ETA the dashboard shows, built once and skipped when done.

A builder is `build(*, project, user, progress) -> link`: idempotent, it reports `progress(done, total,
note)` and returns the page that shows what it made (empty when there is none)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import close_old_connections, connection
from django.utils.module_loading import import_string

from runs.demo import demo_project
from runs.models import Job
from runs.services import job_begin, job_fail, job_finish, job_progress
from workers.inprocess import in_process_worker, needs_in_process_worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoExtra:
    key: str
    title: str
    build: str  # dotted path of the builder, imported when it runs (torch stays out of the server's start)


EXTRAS: tuple[DemoExtra, ...] = (
    DemoExtra(
        "featviz",
        "Feature visualizations of the demo run's last layer",
        "runs.demo_featviz.demo_featviz_build",
    ),
    DemoExtra(
        "twoafc",
        "A 2AFC study: which visualization helps people predict a unit",
        "annotate.demo_twoafc.demo_twoafc_build",
    ),
    DemoExtra(
        "series",
        "Training series and a fine-tuned copy of the toy network",
        "runs.demo_series.demo_series_build",
    ),
    DemoExtra(
        "gan", "A toy GAN dissected, with causal effects and the paint page", "runs.demo_gan.demo_gan_build"
    ),
)


def _report(job_id: int, done: int, total: int, note: str = "") -> None:
    job_progress(job_id=job_id, done=done, total=total, note=note)


def demo_extras_build(*, user: Any, extras: Sequence[DemoExtra] | None = None) -> list[Job]:
    """Build every extra not done yet, in order; one that fails is recorded on its job (shown on the
    dashboard) and the next goes on."""
    project = demo_project()
    jobs = []
    for extra in EXTRAS if extras is None else extras:
        job = job_begin(project=project, key=f"demo:{extra.key}", title=extra.title)
        if job.status != Job.Status.DONE:
            try:
                builder: Callable[..., str] = import_string(extra.build)
                link = builder(project=project, user=user, progress=partial(_report, job.pk))
            except Exception as exc:
                logger.exception("demo extra %s failed", extra.key)
                job_fail(job_id=job.pk, error=f"{type(exc).__name__}: {exc}")
            else:
                job_finish(job_id=job.pk, link=link or "")
            job.refresh_from_db()
        jobs.append(job)
    return jobs


def demo_extras_build_with_worker(*, user: Any) -> list[Job]:
    """`demo_extras_build` with the in-process worker running when there is no broker (the extras' runs and
    jobs are worker tasks; without a consumer they would wait forever)."""
    with in_process_worker() if needs_in_process_worker() else nullcontext():
        return demo_extras_build(user=user)


def demo_extras_start(*, user: Any) -> threading.Thread:
    """Build the extras on a background thread; the server answers meanwhile."""

    def work() -> None:
        close_old_connections()
        try:
            demo_extras_build_with_worker(user=user)
        finally:
            connection.close()

    thread = threading.Thread(target=work, name="demo-extras", daemon=True)
    thread.start()
    return thread
