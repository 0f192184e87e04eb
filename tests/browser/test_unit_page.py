"""The unit page in Chromium: reached from the batch page, its images large and numbered, every answer with
the images it ticked, the consensus, readable at 375 px without horizontal scrolling; a crowd worker who
opens its address lands on the login page."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from annotate.models import Annotation, Batch
from annotate.simulation import crowd_simulate
from tests.browser.conftest import Tabs
from tests.browser.pages import Check, start

pytestmark = pytest.mark.browser


def test_unit_page_from_the_batch_page_and_at_375_px(
    tabs: Tabs,
    page: Page,
    check_page: Check,
    log_in: Callable[[Page], None],
    make_batch: Callable[..., Batch],
) -> None:
    batch = make_batch(assignments_per_task=4, title="Label three units")  # a slot left for mallory
    crowd_simulate(batch=batch, workers=3, spammers=0, accuracy=0.9, seed=1)
    unit = batch.tasks.order_by("position").first().unit  # type: ignore[union-attr]
    ticked = sorted(
        {
            rank + 1
            for annotation in Annotation.objects.filter(assignment__task__unit=unit)
            for rank in annotation.rejected_ranks
        }
    )

    log_in(page)
    page.goto(reverse("annotate:batch_detail", args=[batch.public_id]))
    check_page(page, "batch_detail_with_unit_links")
    page.get_by_role("link", name=f"{unit.layer} unit {unit.number}", exact=True).first.click()
    page.wait_for_url(f"**{reverse('annotate:unit_detail', args=[unit.pk])}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(
        f"Unit {unit.number} · channel {unit.channel}"
    )
    tiles = page.get_by_role("img", name=re.compile(rf"^Image \d+ of unit {unit.number}:"))
    expect(tiles).to_have_count(unit.images.count())
    box = tiles.first.bounding_box()
    assert box is not None and box["width"] >= 150, box  # large, not a thumbnail
    answers = page.get_by_role("region", name=re.compile("Every answer"))
    expect(answers.get_by_role("row")).to_have_count(1 + 3)
    for number in ticked:
        expect(answers.locator("li.ticked", has_text=re.compile(rf"^{number}$")).first).to_be_visible()
    expect(page.get_by_role("heading", name="Consensus")).to_be_visible()
    check_page(page, "unit_page")
    page.get_by_role("link", name="Majority vote").click()
    page.wait_for_url("**?aggregation=majority")
    expect(page.get_by_text("(the majority vote)").first).to_be_visible()
    check_page(page, "unit_page_majority")

    page.set_viewport_size({"width": 375, "height": 800})
    page.reload()
    expect(tiles.first).to_be_visible()
    box = tiles.first.bounding_box()
    assert box is not None and box["width"] >= 250, box  # one image per row, nearly the screen's width
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    check_page(page, "unit_page_375")

    worker = tabs.open()
    start(worker, check_page, batch, "mallory")
    check_page(worker, "task_preview_before_the_unit_page")
    worker.goto(reverse("annotate:unit_detail", args=[unit.pk]))
    worker.wait_for_url("**/accounts/login/**")
    expect(worker.get_by_label("Password")).to_be_visible()
    check_page(worker, "unit_page_refused_to_a_crowd_worker")
