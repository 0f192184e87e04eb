"""Two workers racing for the last open slot get exactly one assignment between them (PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from annotate import services
from annotate.errors import TaskFull
from annotate.models import Assignment, Batch

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks under real concurrency need PostgreSQL (CI sets DATABASE_URL)",
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_two_workers_race_for_the_last_slot(make_batch, round_: int) -> None:
    batch: Batch = make_batch(assignments_per_task=2)
    task = batch.tasks.first()
    services.assignment_accept(
        task=task, worker=services.crowd_worker_get_or_create(provider="local", external_id="first")
    )
    racers = [
        services.crowd_worker_get_or_create(provider="local", external_id=f"racer{i}") for i in range(2)
    ]
    barrier = threading.Barrier(len(racers))
    outcomes: list[str] = []

    def race(worker) -> None:
        try:
            barrier.wait()
            services.assignment_accept(task=task, worker=worker)
            outcomes.append("won")
        except TaskFull:
            outcomes.append("full")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=race, args=(w,)) for w in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["full", "won"]
    assert Assignment.objects.filter(task=task, slot__isnull=False).count() == 2
    assert sorted(Assignment.objects.filter(task=task).values_list("slot", flat=True)) == [0, 1]
