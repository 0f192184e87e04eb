"""Fixtures for the comparison pages: a run of eight tiny units in two layers with Broden labels, a
published label batch on them, and staff / plain clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from annotate import services
from annotate.models import Batch
from runs.models import DissectionRun, Unit
from tests.factories import run_create, unit_create

IMAGES_PER_UNIT = 3
# (layer, label, Broden category, IoU): "sky" is a Broden object that people call a region.
UNITS = [
    ("conv3", "red-c", "color", 0.08),
    ("conv3", "striped", "texture", 0.05),
    ("conv3", "sky", "object", 0.03),
    ("conv3", "wheel", "part", 0.02),
    ("conv4", "kitchen-s", "scene", 0.12),
    ("conv4", "dog", "object", 0.2),
    ("conv4", "wood", "material", 0.06),
    ("conv4", "green-c", "color", 0.01),
]


@pytest.fixture(scope="session")
def _plain_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The live server builds its middleware when it starts, before the root conftest's per-test overrides:
    it must start speaking plain HTTP."""
    with override_settings(
        SECURE_SSL_REDIRECT=False, SECURE_HSTS_SECONDS=0, STATIC_ROOT=tmp_path_factory.mktemp("static")
    ):
        yield


@pytest.fixture(scope="session")
def live_server(_plain_http_server: None, live_server: Any) -> Any:
    return live_server


@pytest.fixture
def run(db: None) -> DissectionRun:
    return run_create("compare run", status=DissectionRun.Status.DONE, layers=["conv3", "conv4"])


@pytest.fixture
def make_unit(run: DissectionRun) -> Callable[..., Unit]:
    def make(channel: int, layer: str, **fields: Any) -> Unit:
        return unit_create(run, channel, layer, images=IMAGES_PER_UNIT, **fields)

    return make


@pytest.fixture
def units(make_unit: Callable[..., Unit]) -> list[Unit]:
    return [
        make_unit(index, layer, label=label, concept_category=category, iou=iou, interpretable=iou > 0.04)
        for index, (layer, label, category, iou) in enumerate(UNITS)
    ]


@pytest.fixture
def make_batch(units: list[Unit]) -> Callable[..., Batch]:
    def make(publish: bool = True, **fields: Any) -> Batch:
        fields.setdefault("title", "Label units")
        fields.setdefault("assignments_per_task", 3)
        fields.setdefault("images_per_task", IMAGES_PER_UNIT)
        batch = services.batch_create(units=fields.pop("units", units), **fields)
        if publish:
            services.batch_publish(batch=batch)
        return batch

    return make


@pytest.fixture
def batch(make_batch: Callable[..., Batch]) -> Batch:
    return make_batch()


class ComparisonWorker:
    """Stands in for the Celery worker: holds the comparison refreshes the services queue, and runs them
    (the real task body) when a test says the worker caught up."""

    def __init__(self) -> None:
        self.queued: list[int] = []

    def run(self) -> int:
        from annotate.tasks import comparison_refresh

        queued, self.queued = self.queued, []
        for summary_id in queued:
            comparison_refresh(summary_id)
        return len(queued)


@pytest.fixture(autouse=True)
def comparison_worker(monkeypatch: pytest.MonkeyPatch) -> ComparisonWorker:
    worker = ComparisonWorker()

    def send(summary_id: int) -> bool:
        worker.queued.append(summary_id)
        return True

    monkeypatch.setattr("annotate.services.comparison._send", send)
    return worker
