"""Fixtures for the annotation service: tiny drawn units, batches, staff and worker clients.

Media go to a per-test folder; static files use the plain storage so pages render without a collectstatic
manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from django.core.cache import cache
from django.test import Client

from annotate import services
from annotate.models import Batch, CrowdWorker, Provider
from annotate.providers.mturk import client as mturk
from runs.models import DissectionRun, Unit
from tests.factories import run_create, unit_create

IMAGES_PER_UNIT = 4


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    """The throttles count per client IP in the cache; every test client is 127.0.0.1, so each test starts
    with none of the earlier tests' requests counted."""
    cache.clear()


@pytest.fixture
def run(db: None) -> DissectionRun:
    return run_create("test run", status=DissectionRun.Status.DONE, layers=["conv4"])


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
    """Start on the batch link as a new worker labelled `worker_id`, following the personal link it gives."""
    client = client or Client()
    response = client.post(f"/w/{batch.public_id}/", {"worker_id": worker_id})
    assert response.status_code == 302 and "/me/" in response.url, response.content
    assert client.get(response.url).status_code == 302
    return client


def _answer(words: str = "red", category: str = "color", rejected: list[int] | None = None) -> dict[str, Any]:
    return {"words": words, "category": category, "rejected": [str(r) for r in (rejected or [])]}


@pytest.fixture
def start_worker() -> Callable[..., Client]:
    """start_worker(batch, worker_id): a browser that opened the batch link and started as a new worker
    labelled worker_id (CrowdWorker.label; the worker's external id is random)."""
    return _start_worker


@pytest.fixture
def answer() -> Callable[..., dict[str, Any]]:
    """answer(words=, category=, rejected=[ranks]): POST data of the label form."""
    return _answer


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Stubber]:
    """MTurk through botocore's Stubber: every call is checked against the real MTurk API model, and every
    queued answer must be used."""
    settings.SITE_URL = "https://annotate.example.org"
    client = boto3.client(
        "mturk",
        region_name="us-east-1",
        endpoint_url=mturk.SANDBOX_ENDPOINT,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    monkeypatch.setattr(mturk, "mturk_client", lambda: client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()
