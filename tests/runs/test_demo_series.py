"""The demo's training series (a demo extra), shrunk: the toy network trained with three checkpoints and a
fine-tuned copy, registered as versions of one network, dissected through the in-process worker, and their
comparison page, which the demo requester can open; a second build reuses all of it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from runs import demo_series
from runs.demo import demo_project
from runs.models import DissectionRun, Network
from tests.factories import logged_in, staff_user

pytestmark = [pytest.mark.slow]

EPOCHS, SAVE_EVERY, FINETUNE_EPOCHS = 3, 1, 1  # checkpoints after epochs 1, 2 and 3


def test_the_series_is_trained_dissected_and_compared_once(
    shared_db: str, demo_cache: Path, django_user_model: Any
) -> None:
    project = demo_project()
    user = staff_user(django_user_model, "requester", project=project)
    reports: list[tuple[int, int, str]] = []

    def build() -> str:
        return demo_series.demo_series_build(
            project=project,
            user=user,
            progress=lambda done, total, note: reports.append((done, total, note)),
            epochs=EPOCHS,
            save_every=SAVE_EVERY,
            finetune_epochs=FINETUNE_EPOCHS,
        )

    link = build()
    runs = list(DissectionRun.objects.order_by("pk"))
    assert len(runs) == EPOCHS + 1 and all(run.status == DissectionRun.Status.DONE for run in runs)
    assert all(run.layers == list(demo_series.SERIES_LAYERS) for run in runs)
    *checkpoints, tuned = [run.network for run in runs]
    assert [network.name for network in checkpoints] == [
        f"{demo_series.SERIES_NETWORK} epoch {epoch}" for epoch in range(1, EPOCHS + 1)
    ]
    steps = [network.step for network in checkpoints]
    assert all(a < b for a, b in itertools.pairwise(steps)), steps
    assert checkpoints[0].base is None and {n.base for n in checkpoints[1:]} == {checkpoints[0]}
    tuned_file = next((demo_cache / f"series-e{EPOCHS}-every{SAVE_EVERY}").glob("scene-*.pt"))
    tuned_steps = torch.load(tuned_file, weights_only=True)["step"]
    assert tuned.base == checkpoints[-1] and tuned.step == checkpoints[-1].step + tuned_steps
    assert [done for done, _, _ in reports] == sorted(done for done, _, _ in reports)
    assert reports[-1][:2] == (100, 100)

    page = logged_in(user).get(link)
    html = page.content.decode()
    assert page.status_code == 200 and "Comparison of dissections" in html
    for run in runs:
        assert run.name in html
    assert f"Interpretable units and unique concepts of layer {runs[0].layers[0]} over training" in html

    reports.clear()
    assert build() == link  # nothing trained, registered or dissected again
    assert DissectionRun.objects.count() == len(runs) and Network.objects.count() == len(runs)
    assert not any("training" in note or "fine-tuning" in note for _, _, note in reports)
