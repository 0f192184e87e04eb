"""Fixtures for the annotation service: tiny drawn units, batches, staff and worker clients.

Media go to a per-test folder; static files use the plain storage so pages render without a collectstatic
manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from annotate import services
from annotate.models import Batch, CrowdWorker, Provider
from runs.models import DissectionRun, Unit
from tests.factories import unit_create

IMAGES_PER_UNIT = 4


@pytest.fixture
def run(db: None) -> DissectionRun:
    return DissectionRun.objects.create(name="test run", status=DissectionRun.Status.DONE, layers=["conv4"])


@pytest.fixture
def make_unit(run: DissectionRun) -> Callable[..., Unit]:
    def make(channel: int, layer: str = "conv4", images: int = IMAGES_PER_UNIT, **fields: Any) -> Unit:
        return unit_create(run, channel, layer, images=images, **fields)

    return make


@pytest.fixture
def units(make_unit: Callable[..., Unit]) -> list[Unit]:
    return [make_unit(i, label=f"concept{i}", interpretable=i % 2 == 0) for i in range(3)]


@pytest.fixture
def make_batch(units: list[Unit]) -> Callable[..., Batch]:
    def make(
        publish: bool = True, gold: dict[int, services.GoldAnswer] | None = None, **fields: Any
    ) -> Batch:
        fields.setdefault("assignments_per_task", 2)
        fields.setdefault("images_per_task", IMAGES_PER_UNIT)
        fields.setdefault("title", "Label units")
        fields.setdefault("reward", Decimal("0.10"))
        fields.setdefault("assignment_duration", timedelta(minutes=10))
        batch = services.batch_create(units=fields.pop("units", units), gold=gold, **fields)
        if publish:
            services.batch_publish(batch=batch)
        return batch

    return make


@pytest.fixture
def batch(make_batch: Callable[..., Batch]) -> Batch:
    return make_batch()


@pytest.fixture
def gold_batch(make_batch: Callable[..., Batch], units: list[Unit]) -> Batch:
    """Unit 0 is gold: category color, accepted words red / red circle."""
    return make_batch(gold={units[0].pk: services.GoldAnswer("color", ("red", "red circle"))})


@pytest.fixture
def worker(db: None) -> CrowdWorker:
    return services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id="alice")


def _start_worker(batch: Batch, worker_id: str, client: Client | None = None) -> Client:
    client = client or Client()
    response = client.post(f"/w/{batch.public_id}/", {"worker_id": worker_id})
    assert response.status_code == 302, response.content
    return client


def _answer(words: str = "red", category: str = "color", rejected: list[int] | None = None) -> dict[str, Any]:
    return {"words": words, "category": category, "rejected": [str(r) for r in (rejected or [])]}


@pytest.fixture
def start_worker() -> Callable[..., Client]:
    """start_worker(batch, worker_id): a browser that opened the batch link and started as worker_id."""
    return _start_worker


@pytest.fixture
def answer() -> Callable[..., dict[str, Any]]:
    """answer(words=, category=, rejected=[ranks]): POST data of the label form."""
    return _answer
