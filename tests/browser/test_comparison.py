"""The comparison dashboard in Chromium: its plots, the aggregation switch, a table download, and the blind
verification batch it creates, answered by a worker in another tab."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from annotate.models import Annotation, Batch, ComparisonSummary, Task
from annotate.simulation import crowd_simulate
from annotate.tasks import comparison_refresh
from runs.models import DissectionRun
from tests.browser.conftest import Tabs
from tests.browser.pages import Check, tab_to

pytestmark = pytest.mark.browser

PLOTS = ("confusion", "agreement", "scatter")


def expect_plots(page: Page, names: tuple[str, ...]) -> None:
    for name in names:
        drawing = page.locator(f"#plot-{name} svg[role=img]")
        expect(drawing).to_be_visible()
        box = drawing.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100, (name, box)


def test_comparison_dashboard_shows_its_plots_and_starts_blind_verification(
    tabs: Tabs,
    page: Page,
    check_page: Check,
    log_in: Callable[[Page], None],
    make_batch: Callable[..., Batch],
    run: DissectionRun,
    tmp_path: Path,
) -> None:
    batch = make_batch(
        units=list(run.units.order_by("channel")), assignments_per_task=3, title="Label every drawn unit"
    )
    crowd_simulate(batch=batch, workers=4, spammers=1, accuracy=0.8, seed=0)

    log_in(page)
    page.get_by_role("row").filter(has_text=batch.title).get_by_role("link", name="comparison").click()
    expect(page.get_by_role("heading", name="Human versus automatic labels")).to_be_visible()
    expect_plots(page, PLOTS)
    expect(page.locator("#plot-verification")).to_have_count(0)
    check_page(page, "comparison_before_verification")

    page.get_by_label("Human category from").select_option(label="Majority vote")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/comparison/?aggregation=majority")
    expect_plots(page, PLOTS)
    check_page(page, "comparison_majority")

    with page.expect_download() as download:
        page.locator("#table-layers").get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename == f"batch-{batch.public_id}-layers.csv"
    saved = tmp_path / "layers.csv"
    download.value.save_as(saved)
    with saved.open(newline="") as stream:
        layers = list(csv.DictReader(stream))
    assert "conv4" in {row["layer"] for row in layers}

    page.get_by_role("button", name="Create blind verification tasks").click()
    expect(page.get_by_role("status")).to_contain_text("Draft verification batch created")
    check_page(page, "verification_draft")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("status")).to_contain_text("Batch published.")
    check_page(page, "verification_published")
    verification = Batch.objects.exclude(pk=batch.pk).get()
    worker_link = page.locator("code.link").inner_text()

    worker = tabs.open()
    worker.goto(worker_link)
    check_page(worker, "worker_start")
    worker.get_by_label("Your worker id").fill("vera")
    worker.get_by_role("button", name="Start").click()
    worker.wait_for_url("**/w/task/*/")
    expect(worker.get_by_role("button", name="Submit answer")).to_be_disabled()
    check_page(worker, "worker_verify_preview")
    worker.get_by_role("button", name="Accept this task").click()
    worker.wait_for_url("**/w/a/*/")
    task = Task.objects.get(assignments__worker__label="vera")
    expect(worker.locator("#candidate-label")).to_have_text(task.candidate_label)
    # As the page says: keys choose the answer and Enter submits it.
    tab_to(worker, worker.get_by_label("Yes", exact=True))
    worker.keyboard.press("Space")
    expect(worker.get_by_label("Yes", exact=True)).to_be_checked()
    check_page(worker, "worker_verify")
    worker.keyboard.press("Enter")
    worker.wait_for_url("**/w/task/*/")
    check_page(worker, "worker_verify_next")
    assert Annotation.objects.get(assignment__worker__label="vera").verify_answer is True

    crowd_simulate(batch=verification, workers=3, spammers=0, accuracy=0.9, seed=1)
    page.goto(f"/batches/{batch.public_id}/comparison/")
    expect(page.locator("#stale")).to_contain_text("being recomputed")
    for stored in ComparisonSummary.objects.filter(batch=batch):  # the Celery worker catches up
        comparison_refresh(stored.pk)
    page.reload()
    expect(page.locator("#stale")).to_have_count(0)
    expect_plots(page, (*PLOTS, "verification"))
    expect(page.get_by_role("list", name="Blind verification")).to_contain_text("labels judged correct")
    check_page(page, "comparison")

    page.get_by_role("link", name="Dashboard").click()
    check_page(page, "dashboard_comparison")
    page.get_by_role("row").filter(has_text=run.name).get_by_role("link", name="comparison").click()
    expect(page.get_by_role("heading", name=f"Human versus automatic labels: Run {run.name}")).to_be_visible()
    expect_plots(page, PLOTS)
    check_page(page, "run_comparison")
