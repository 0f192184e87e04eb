"""The sweep hands a feature-visualization job's lost work back to the workers: a launch the broker refused
waits and is queued by the first sweep after it is back, a group whose message the broker lost is queued again
once, a stored group is never optimized again, a lost merge is queued alone, a job
that still progresses is left alone, and a job whose run or plan is gone fails with the reason."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from runs import featviz
from runs import services as runs
from runs.models import DissectionRun, Job
from runs.tasks import featviz_merge, featviz_shard
from tests.runs.conftest import FEATVIZ_CHANNELS, FEATVIZ_LAYER

LAYER = FEATVIZ_LAYER
CHANNELS = FEATVIZ_CHANNELS
FAST = {"steps": 3, "size": 32, "units_per_shard": 2, "lr": 0.2}  # two groups of two units
STALE_S = 60

pytestmark = pytest.mark.django_db


class Broker:
    """The featviz tasks sent by the launch and by the sweep, in order; `lose` drops the next sends of one
    group (the broker took them, then lost them), `down` refuses every send."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, tuple[Any, ...]]] = []
        self.lose: set[int] = set()
        self.down = False

    def send(self, task: str, *args: Any) -> bool:
        if self.down:
            return False
        if task == "featviz_shard" and args[2] in self.lose:
            self.lose.discard(args[2])
            return True
        self.queued.append((task, args))
        return True

    def deliver_all(self) -> None:
        """What the workers do with everything queued (the gpu queue's groups, the default queue's merge)."""
        while self.queued:
            task, args = self.queued.pop(0)
            {"featviz_shard": featviz_shard, "featviz_merge": featviz_merge}[task].run(*args)


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Broker:
    settings.SHARD_STALE_AFTER_S = STALE_S
    fake = Broker()
    monkeypatch.setattr(featviz, "task_send", fake.send)
    monkeypatch.setattr(runs, "task_send", fake.send)
    return fake


@pytest.fixture
def optimized(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The groups a worker optimized, in order (the costly step a lost message must not repeat needlessly)."""
    groups: list[int] = []
    visualize = featviz._visualize

    def spy(run: DissectionRun, plan: dict[str, Any], index: int, job_id: int) -> dict[str, Any]:
        groups.append(index)
        return visualize(run, plan, index, job_id)

    monkeypatch.setattr(featviz, "_visualize", spy)
    return groups


@pytest.fixture
def run(featviz_run: DissectionRun) -> DissectionRun:
    return featviz_run


@pytest.fixture
def launch(run: DissectionRun, django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[[], Job]:
    def launch() -> Job:
        with django_capture_on_commit_callbacks(execute=True):
            return featviz.featviz_launch(run=run, layer=LAYER, **FAST)

    return launch


def _age(job: Job) -> None:
    """The job's last progress moved back past the stale limit: what the sweep sees once the time passed."""
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(seconds=2 * STALE_S))


def _results(run: DissectionRun) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
    """The layer's featviz.json and every stored PNG's bytes, by key."""
    index = featviz.featviz_index(run_id=run.pk, layer=LAYER)
    assert index is not None
    prefix = featviz.featviz_prefix(run.pk, LAYER)
    pngs = {}
    for entry in index["images"]:
        with default_storage.open(f"{prefix}/{entry['file']}", "rb") as handle:
            pngs[entry["file"]] = handle.read()
    return index, pngs


def test_a_lost_group_is_queued_again_once_and_the_job_ends_as_an_undisturbed_one(
    run: DissectionRun, broker: Broker, optimized: list[int], launch: Callable[[], Job]
) -> None:
    launch()
    broker.deliver_all()
    undisturbed = _results(run)
    assert optimized == [0, 1]

    broker.lose = {1}  # the broker restarts without persistence: the second group's message is gone
    job = launch()
    broker.deliver_all()
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.note == "groups of units done: 1/2"
    assert optimized == [0, 1, 0]

    _age(job)
    outcome = runs.runs_sweep()
    assert outcome.jobs_requeued == [(job.pk, "shard 1")] and outcome.jobs_failed == []
    assert [(task, args[2]) for task, args in broker.queued] == [("featviz_shard", 1)]
    assert runs.runs_sweep().jobs_requeued == [], "the queued group gets its time: it is not queued twice"

    broker.deliver_all()
    job.refresh_from_db()
    assert job.status == Job.Status.DONE and job.done == job.total
    assert optimized == [0, 1, 0, 1], "the stored group 0 was not optimized again"
    assert _results(run) == undisturbed
    _age(job)
    assert runs.runs_sweep().jobs_requeued == [], "a finished job is never swept"


def test_a_lost_merge_is_queued_alone(
    run: DissectionRun,
    broker: Broker,
    optimized: list[int],
    launch: Callable[[], Job],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = launch()
    _, first = broker.queued.pop(0)
    featviz_shard.run(*first)
    merge = featviz._merge
    monkeypatch.setattr(featviz, "_merge", lambda *args: None)  # the last group stored, its merge lost
    broker.deliver_all()
    monkeypatch.setattr(featviz, "_merge", merge)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and optimized == [0, 1]

    _age(job)
    outcome = runs.runs_sweep()
    assert outcome.jobs_requeued == [(job.pk, "merge")]
    assert broker.queued == [("featviz_merge", (run.pk, LAYER, first[3]))]
    broker.deliver_all()
    job.refresh_from_db()
    assert job.status == Job.Status.DONE and optimized == [0, 1]
    index, _ = _results(run)
    assert index is not None and [u["channel"] for u in index["units"]] == list(CHANNELS)


def test_a_job_that_progressed_within_the_limit_is_left_alone(
    broker: Broker, optimized: list[int], launch: Callable[[], Job]
) -> None:
    broker.lose = {1}
    job = launch()
    broker.deliver_all()
    outcome = runs.runs_sweep()
    assert outcome.jobs_requeued == [] and broker.queued == []
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and optimized == [0]


def test_a_sweep_the_broker_refuses_leaves_the_job_to_the_next_sweep(
    broker: Broker, launch: Callable[[], Job]
) -> None:
    broker.lose = {0, 1}
    job = launch()
    _age(job)
    broker.down = True
    assert runs.runs_sweep().jobs_requeued == []
    broker.down = False
    outcome = runs.runs_sweep()
    assert outcome.jobs_requeued == [(job.pk, "shard 0"), (job.pk, "shard 1")]
    broker.deliver_all()
    job.refresh_from_db()
    assert job.status == Job.Status.DONE


@pytest.mark.parametrize("gone", ["run", "plan"])
def test_a_job_whose_run_or_plan_is_gone_fails_with_the_reason(
    run: DissectionRun, broker: Broker, launch: Callable[[], Job], gone: str
) -> None:
    job = launch()
    broker.queued.clear()
    if gone == "run":
        run.delete()
    else:
        default_storage.delete(runs.featviz_plan_key(run.pk, LAYER))
    _age(job)
    outcome = runs.runs_sweep()
    assert outcome.jobs_failed == [job.pk] and outcome.jobs_requeued == [] and broker.queued == []
    job.refresh_from_db()
    message = "no longer exists" if gone == "run" else "cannot be read: launch the visualization again"
    assert job.status == Job.Status.FAILED and message in job.error


def test_a_launch_the_broker_refuses_waits_and_the_sweep_queues_it_once_the_broker_is_back(
    run: DissectionRun, broker: Broker, optimized: list[int], launch: Callable[[], Job]
) -> None:
    launch()
    broker.deliver_all()
    undisturbed = _results(run)

    broker.down = True
    job = launch()
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.note == featviz.BROKER_WAIT and job.error == ""
    assert runs.runs_sweep().jobs_requeued == [], "still down: the job keeps waiting"
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.note == featviz.BROKER_WAIT

    broker.down = False
    outcome = runs.runs_sweep()  # no stale limit to wait out: nothing was ever queued
    assert outcome.jobs_requeued == [(job.pk, "shard 0"), (job.pk, "shard 1")]
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert runs.runs_sweep().jobs_requeued == [], "queued once"
    broker.deliver_all()
    job.refresh_from_db()
    assert job.status == Job.Status.DONE and optimized == [0, 1, 0, 1]
    assert _results(run) == undisturbed
