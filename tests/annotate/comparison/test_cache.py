"""The comparison's stored figures: computed once per change of their inputs by the worker task, served
from the store (page and downloads), equal to a fresh computation after every kind of change."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotate import services
from annotate.models import Assignment, Batch, ComparisonSummary, CrowdWorker, Task
from annotate.selectors import comparison as selectors
from annotate.services import comparison as comparison_services
from annotate.services.verification import verification_batch_create
from annotate.simulation import crowd_simulate
from runs.models import DissectionRun
from tests.annotate.comparison.conftest import ComparisonWorker


@pytest.fixture
def computations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of the compute function (`comparison_summarize`), by aggregation."""
    calls: list[str] = []
    compute = selectors.comparison_summarize

    def counted(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs.get("aggregation", "dawid_skene"))
        return compute(**kwargs)

    monkeypatch.setattr(selectors, "comparison_summarize", counted)
    return calls


def _page(client: Client, batch: Batch, **params: str) -> str:
    response = client.get(reverse("annotate:batch_comparison", args=[batch.public_id]), params)
    assert response.status_code == 200
    return response.content.decode()


def _fresh(batch: Batch, aggregation: selectors.Aggregation = "dawid_skene") -> dict[str, Any]:
    batch.refresh_from_db()
    return selectors.comparison_summarize(
        data=selectors.batch_comparison_input(batch=batch), aggregation=aggregation
    )


def _stored(batch: Batch, aggregation: str = "dawid_skene") -> ComparisonSummary:
    return ComparisonSummary.objects.get(batch=batch, aggregation=aggregation)


def test_the_dashboard_does_not_recompute_when_nothing_changed(
    staff_client: Client, batch: Batch, computations: list[str], comparison_worker: ComparisonWorker
) -> None:
    crowd_simulate(batch=batch, workers=4, spammers=1, accuracy=0.8, seed=2)
    html = _page(staff_client, batch)
    assert computations == ["dawid_skene"], "the first view computes, once"
    assert 'id="stale"' not in html and "Figures computed <time" in html
    base = reverse("annotate:batch_comparison", args=[batch.public_id])
    for _ in range(3):
        _page(staff_client, batch)
        assert staff_client.get(f"{base}units.csv").status_code == 200
        assert staff_client.get(f"{base}summary.json").status_code == 200
    assert computations == ["dawid_skene"]
    _page(staff_client, batch, aggregation="majority")
    _page(staff_client, batch, aggregation="majority")
    assert computations == ["dawid_skene", "majority"], "each aggregation is stored once"
    assert comparison_worker.queued == []
    assert comparison_services.comparison_summary_recompute(summary_id=_stored(batch).pk) is False
    assert computations == ["dawid_skene", "majority"], "the task too skips figures that are current"


def _answer(task: Task, worker: str, words: str = "dog", category: str = "object") -> Assignment:
    crowd_worker = services.crowd_worker_get_or_create(provider="local", external_id=worker)
    assignment = services.assignment_accept(task=task, worker=crowd_worker)
    services.annotation_submit(assignment=assignment, words=words, category=category)
    assignment.refresh_from_db()
    return assignment


def _new_answer(batch: Batch, client: Client) -> None:
    _answer(batch.tasks.order_by("position").last(), "late-worker", "kitchen", "scene")


def _approve(batch: Batch, client: Client) -> None:
    assignment = Assignment.objects.filter(task__batch=batch, status=Assignment.Status.SUBMITTED).first()
    services.assignment_approve(assignment=assignment)


def _reject(batch: Batch, client: Client) -> None:
    assignment = Assignment.objects.filter(task__batch=batch, status=Assignment.Status.SUBMITTED).first()
    services.assignment_reject(assignment=assignment, feedback="These words do not describe the images.")


def _verification_answers(batch: Batch, client: Client) -> None:
    verification = verification_batch_create(batch=batch)
    services.batch_publish(batch=verification)
    crowd_simulate(batch=verification, workers=3, spammers=0, accuracy=0.9, seed=3)


def _min_answers(batch: Batch, client: Client) -> None:
    url = reverse("annotate:batch_comparison_settings", args=[batch.public_id])
    response = client.post(url, {"min_answers": "3"}, follow=True)
    assert "Units now need 3 answers to count" in response.content.decode()


CHANGES: dict[str, Callable[[Batch, Client], None]] = {
    "new answer": _new_answer,
    "review approve": _approve,
    "review reject": _reject,
    "verification answers": _verification_answers,
    "minimum answers": _min_answers,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_the_stored_summary_equals_a_fresh_one_after_every_kind_of_change(
    staff_client: Client,
    make_batch: Callable[..., Batch],
    comparison_worker: ComparisonWorker,
    change: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    batch = make_batch(assignments_per_task=4)
    crowd_simulate(batch=batch, workers=5, spammers=1, accuracy=0.8, seed=1, limit=20)
    _page(staff_client, batch)
    _page(staff_client, batch, aggregation="majority")
    before = _stored(batch).summary
    assert before == _fresh(batch)
    with django_capture_on_commit_callbacks(execute=True):  # the services queue once their writes commit
        CHANGES[change](batch, staff_client)
    if change == "review approve":  # an approved answer counts as a submitted one: nothing to redo
        assert comparison_worker.queued == [] and 'id="stale"' not in _page(staff_client, batch)
    else:
        assert sorted(comparison_worker.queued) == sorted(
            ComparisonSummary.objects.filter(batch=batch).values_list("pk", flat=True)
        ), "both stored aggregations are queued, once each"
        assert _fresh(batch) != before
        assert 'id="stale"' in _page(staff_client, batch), "the page says newer answers are being recomputed"
        comparison_worker.run()
    for aggregation in ("dawid_skene", "majority"):
        assert _stored(batch, aggregation).summary == _fresh(batch, aggregation)
        assert 'id="stale"' not in _page(staff_client, batch, aggregation=aggregation)
    base = reverse("annotate:batch_comparison", args=[batch.public_id])
    assert json.loads(staff_client.get(f"{base}summary.json").content) == _fresh(batch)


def test_a_burst_of_answers_queues_one_recomputation(
    staff_client: Client,
    batch: Batch,
    comparison_worker: ComparisonWorker,
    run: DissectionRun,
    django_capture_on_commit_callbacks: Any,
) -> None:
    _page(staff_client, batch)
    staff_client.get(reverse("annotate:run_comparison", args=[run.pk]))
    with django_capture_on_commit_callbacks(execute=True):
        crowd_simulate(batch=batch, workers=3, spammers=0, accuracy=0.9, seed=5)
    stored = {_stored(batch).pk, ComparisonSummary.objects.get(run=run).pk}
    assert sorted(comparison_worker.queued) == sorted(stored), "the batch's and the run's, once each"
    _page(staff_client, batch)
    assert len(comparison_worker.queued) == 2, "a stale page does not queue what already waits"
    comparison_worker.run()
    assert _stored(batch).summary == _fresh(batch)
    run_fresh = selectors.comparison_summarize(data=selectors.run_comparison_input(run=run))
    assert ComparisonSummary.objects.get(run=run).summary == run_fresh


def test_a_lost_recomputation_is_queued_again(
    staff_client: Client,
    batch: Batch,
    comparison_worker: ComparisonWorker,
    django_capture_on_commit_callbacks: Any,
) -> None:
    _page(staff_client, batch)
    with django_capture_on_commit_callbacks(execute=True):
        crowd_simulate(batch=batch, workers=2, spammers=0, accuracy=0.9, limit=2)
    assert len(comparison_worker.queued) == 1
    comparison_worker.queued.clear()  # the broker lost it
    ComparisonSummary.objects.update(
        queued_at=timezone.now() - comparison_services.REQUEUE_AFTER - timedelta(1)
    )
    assert 'id="stale"' in _page(staff_client, batch)
    assert len(comparison_worker.queued) == 1


def test_downloads_come_from_the_store_and_say_when_computed(
    staff_client: Client, batch: Batch, computations: list[str]
) -> None:
    crowd_simulate(batch=batch, workers=3, spammers=0, accuracy=0.9, seed=6)
    base = reverse("annotate:batch_comparison", args=[batch.public_id])
    response = staff_client.get(f"{base}layers.json")
    stored = _stored(batch)
    assert json.loads(response.content) == stored.summary["tables"]["layers"]
    assert response["Last-Modified"]
    CrowdWorker.objects.update(label="renamed")  # not an input: nothing to recompute
    staff_client.get(f"{base}units.csv")
    assert computations == ["dawid_skene"]


def test_the_minimum_must_be_a_sensible_number(staff_client: Client, batch: Batch) -> None:
    url = reverse("annotate:batch_comparison_settings", args=[batch.public_id])
    response = staff_client.post(url, {"min_answers": "0"}, follow=True)
    assert "Ensure this value is greater than or equal to 1" in response.content.decode()
    batch.refresh_from_db()
    assert batch.min_answers == 2
