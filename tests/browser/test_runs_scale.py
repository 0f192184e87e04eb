"""The run page of a run with 1,000 units in Chromium: the first screen fetches a few thumbnails, not all of
them; layer tabs, filters and pages work from the page's own links and form."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, expect

from runs.models import DissectionRun, Unit, UnitImage
from tests.browser.pages import Check
from tests.factories import png_bytes, run_create

pytestmark = pytest.mark.browser

UNITS = 1000
IMAGES = 2
# Whether the first thumbnail of a row of the units table (first-child, last-child) has been fetched.
_LOADED = (
    "((img) => img.complete && img.naturalWidth > 0)"
    "(document.querySelector('table.units tbody tr:{row} img'))"
)


def _big_run(media_root: Path) -> DissectionRun:
    """A finished run: 1,000 units of conv4 (and 3 of conv3), each with its own stored thumbnails."""
    run = run_create("big run", status=DissectionRun.Status.DONE, progress=1.0, layers=["conv3", "conv4"])
    units = Unit.objects.bulk_create(
        [
            Unit(
                run=run,
                layer="conv4",
                channel=channel,
                label=["roof", "white-c", "meadow-s", "wheel"][channel % 4],
                concept_category=["object", "color", "scene", "part"][channel % 4],
                iou=(channel * 7919 % 1000) / 1000,
                interpretable=True,
            )
            for channel in range(UNITS)
        ]
        + [Unit(run=run, layer="conv3", channel=c, label="sky-s", concept_category="scene") for c in range(3)]
    )
    png = png_bytes(size=16)
    rows = []
    for unit in units:
        for rank in range(IMAGES):
            key = f"units/{run.pk}/{unit.layer}/{unit.channel}-{rank}.png"
            path = media_root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            rows.append(UnitImage(unit=unit, rank=rank, image=key))
    UnitImage.objects.bulk_create(rows)
    return run


def test_the_first_screen_of_a_1000_unit_run_fetches_few_thumbnails(
    page: Page, check_page: Check, log_in: Callable[[Page], None], settings: Any
) -> None:
    run = _big_run(Path(settings.MEDIA_ROOT))
    log_in(page)
    fetched: list[str] = []
    page.on("request", lambda request: _count_media(request, fetched))
    page.goto(f"/runs/{run.pk}/?layer=conv4")
    page.wait_for_function(f"() => {_LOADED.format(row='first-child')}")
    page.wait_for_load_state("networkidle")
    first_screen = len(fetched)
    assert 0 < first_screen < 50 * IMAGES, first_screen  # one page holds 50 units; the screen far fewer
    expect(page.get_by_text("Units 1–50 of 1000")).to_be_visible()
    page.locator("nav.pages").scroll_into_view_if_needed()  # scrolling down loads the rest of the page
    page.wait_for_function(f"() => {_LOADED.format(row='last-child')}")
    assert first_screen < len(fetched) <= 50 * IMAGES
    check_page(page, "run_units_scale")

    page.get_by_label("Label contains").fill("white")
    page.get_by_label("Sort").select_option(label="Unit number")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("Units 1–50 of 250")).to_be_visible()
    first = page.locator("table.units tbody tr").first
    expect(first).to_contain_text("unit 2")
    expect(first).to_contain_text("channel 1")
    expect(first).to_contain_text("white")
    expect(first).not_to_contain_text("white-c")
    check_page(page, "run_units_filtered")
    page.get_by_role("link", name="Next").click()
    expect(page.get_by_text("Units 51–100 of 250")).to_be_visible()
    expect(page.get_by_label("Label contains")).to_have_value("white")
    check_page(page, "run_units_filtered_page2")

    page.get_by_role("navigation", name="Layers").get_by_role("link", name="conv3").click()
    expect(page.get_by_text("Units 1–3 of 3")).to_be_visible()
    expect(page.get_by_role("link", name="conv3")).to_have_attribute("aria-current", "page")
    check_page(page, "run_units_conv3")

    page.get_by_role("link", name="unit 1", exact=True).click()
    page.wait_for_url("**/units/*/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Unit 1")
    check_page(page, "run_unit_page")


def _count_media(request: Request, fetched: list[str]) -> None:
    if "/media/" in request.url:
        fetched.append(request.url)
