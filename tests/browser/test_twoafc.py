"""A 2AFC trial in Chromium: accept, see the references and the two queries, answer with the keyboard alone
(arrow or 1/2 for the image, 1-3 for confidence, Enter), and the requester's results section with its plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from annotate.models import Annotation, Batch
from annotate.services import batch_publish
from annotate.services import twoafc as twoafc_services
from annotate.services.twoafc import TwoAfcSettings, twoafc_batch_create
from annotate.simulation import twoafc_crowd_simulate
from runs.models import DissectionRun, ProbeSet, Unit
from tests.browser.conftest import SCREENSHOTS
from tests.browser.pages import Check, start
from tests.factories import shared_project

pytestmark = pytest.mark.browser
REFERENCES = 4


@pytest.fixture
def study(run: DissectionRun, probe_set_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Batch:
    """A published 2AFC batch on the drawn run's six units, its queries from the synthetic probe set."""
    run.probe_set = ProbeSet.objects.create(project=shared_project(), name="probe", path=str(probe_set_dir))
    run.save(update_fields=["probe_set"])

    def activations(*, units: list[Unit]) -> dict[int, np.ndarray]:
        rng = np.random.default_rng(0)
        return {unit.pk: rng.permutation(160).astype(np.float64) for unit in units}

    monkeypatch.setattr(twoafc_services, "unit_activations", activations)
    batch = twoafc_batch_create(
        title="Which image activates the unit more?",
        instructions="Pick the image that activates the unit more.",
        units=list(run.units.order_by("channel")),
        settings=TwoAfcSettings(conditions=("natural", "none"), references=REFERENCES, seed=3),
        assignments_per_task=5,
    )
    batch_publish(batch=batch)
    return batch


def _answer_by_keyboard(page: Page, check_page: Check, choice_key: str, confidence: str, name: str) -> None:
    page.get_by_role("button", name="Accept this trial").click()
    page.wait_for_url("**/w/a/*/")
    expect(page.get_by_role("img", name="The left image")).to_be_visible()
    expect(page.get_by_role("img", name="The right image")).to_be_visible()
    check_page(page, name)
    page.keyboard.press(choice_key)
    side = "left" if choice_key in ("1", "ArrowLeft") else "right"
    expect(page.locator(f"#choice-{side}")).to_be_checked()
    expect(page.get_by_role("status")).to_contain_text(f"You picked the {side} image")
    page.keyboard.press(confidence)
    expect(page.get_by_role("radio", name=f"{confidence} ·")).to_be_checked()
    page.keyboard.press("Enter")
    page.wait_for_url("**/w/task/*/")


def test_a_worker_answers_trials_with_the_keyboard_and_the_requester_sees_the_results(
    page: Page, check_page: Check, study: Batch, log_in: Any
) -> None:
    start(page, check_page, study, "kim")
    check_page(page, "twoafc_preview")
    _answer_by_keyboard(page, check_page, "ArrowRight", "3", "twoafc_trial")
    check_page(page, "twoafc_preview_next")
    _answer_by_keyboard(page, check_page, "1", "1", "twoafc_trial_2")
    answers = list(Annotation.objects.filter(assignment__task__batch=study).order_by("pk"))
    assert [(a.choice, a.confidence) for a in answers] == [("right", 3), ("left", 1)]
    assert all(cast(int, a.reaction_ms) > 0 for a in answers)
    check_page(page, "twoafc_preview_after")

    twoafc_crowd_simulate(batch=study, workers=4, seed=2)
    log_in(page)
    page.goto(f"/batches/{study.public_id}/comparison/")
    section = page.locator("#twoafc")
    expect(section.get_by_role("img", name="Proportion correct per condition, all layers")).to_be_visible()
    expect(section.get_by_role("heading", name="2AFC: could people predict each unit?")).to_be_visible()
    check_page(page, "twoafc_results")
    section.screenshot(path=str(SCREENSHOTS / "twoafc_results_section.png"))
