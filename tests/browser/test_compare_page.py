"""The comparison of runs in Chromium: two dissected versions of the toy network (the second has conv4's
channels rolled by one, so the same detectors sit under other unit numbers and some units change concept),
opened from the runs list, its plots named for screen readers, and a changed unit followed to its page."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from django.core.files import File
from playwright.sync_api import Page, expect

from runs import services as runs
from runs.models import DissectionRun, Network, Unit
from tests.browser.pages import Check
from tests.factories import shared_project
from tests.runs.conftest import drain

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAYER = "conv4"
LATER_STEP = 100


def rolled(weights: Path, out: Path) -> Path:
    """The toy checkpoint with conv4's output channels rolled by one (and the classifier's inputs with them):
    the same network, each conv4 detector under the next unit; no training needed."""
    checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    for key, value in state.items():
        if key.startswith(f"{LAYER}.") and value.ndim >= 1:
            state[key] = value.roll(1, dims=0)
    state["fc.weight"] = state["fc.weight"].roll(1, dims=1)
    torch.save(checkpoint, out)
    return out


def _register(name: str, weights: Path, *, step: int, base: Network | None) -> Network:
    with weights.open("rb") as handle:
        return runs.network_register(
            project=shared_project(),
            name=name,
            architecture="toy",
            weights=File(handle, name=weights.name),
            step=step,
            base=base,
            inspect_now=True,
        )


def test_the_comparison_of_two_versions_names_its_plots_and_links_each_changed_unit(
    page: Page,
    check_page: Check,
    log_in: Callable[[Page], None],
    settings: Any,
    tmp_path: Path,
    toy_weights: Path,
    probe_set_dir: Path,
) -> None:
    settings.WORK_DIR = tmp_path / "work"
    first = _register("toy", toy_weights, step=0, base=None)
    later = _register("toy rolled", rolled(toy_weights, tmp_path / "rolled.pt"), step=LATER_STEP, base=first)
    probe_set = runs.probe_set_register(
        project=shared_project(), name="synthetic", path=str(probe_set_dir), inspect_now=True
    )
    series = runs.run_series_launch(
        project=shared_project(),
        name="series",
        networks=[first, later],
        probe_set=probe_set,
        layers=[LAYER],
        shard_size=160,
        topk=2,
    )
    for run in series:
        assert drain(run).status == DissectionRun.Status.DONE

    log_in(page)
    page.get_by_role("link", name="Compare runs").click()
    for run in series:
        page.get_by_role("checkbox", name=f"Compare {run.name}", exact=True).check()
    check_page(page, "compare_pick")
    page.get_by_role("button", name="Compare the selected runs").click()
    expect(page.get_by_role("heading", name="Comparison of dissections")).to_be_visible()
    for name in (
        f"Unique concepts detected per category in layer {LAYER}, one bar per run",
        f"Interpretable units and unique concepts of layer {LAYER} over training",
        f"Unique concepts per category of layer {LAYER} over training",
    ):
        expect(page.get_by_role("img", name=name)).to_be_visible()
    plots = page.locator(".report svg")
    expect(plots).to_have_count(3)
    for plot in plots.all():
        assert plot.get_attribute("role") == "img" and (plot.get_attribute("aria-label") or "").strip()
    pair = f"{series[0].name} → {series[1].name}, layer {LAYER}"
    expect(page.get_by_role("heading", name=pair)).to_be_visible()
    check_page(page, "compare_page")

    link = page.get_by_role("link", name=re.compile(rf"^unit \d+ in {re.escape(series[1].name)}$")).first
    number = int(link.inner_text().split()[1])
    unit = Unit.objects.get(run=series[1], layer=LAYER, channel=number - 1)
    link.click()
    page.wait_for_url(f"**/units/{unit.pk}/")
    heading = f"Unit {unit.number} · channel {unit.channel}"
    expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
    check_page(page, "compare_unit")
