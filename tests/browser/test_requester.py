"""The requester's side in Chromium: log in, create a batch from a run's units, publish, review and
approve / reject the answers, and download the exports."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from annotate import services
from annotate.models import Assignment, Batch, Provider
from runs.models import DissectionRun
from tests.browser.conftest import IMAGES_PER_UNIT
from tests.browser.pages import Check

pytestmark = pytest.mark.browser

# worker -> one (words, category, rejected ranks) per task, in batch order
CROWD = {
    "carol": [("red circle", "color", [4]), ("stripes", "texture", []), ("green", "color", [1, 2])],
    "dave": [("blob", "object", [0, 1, 2]), ("lines", "texture", [11]), ("triangle", "object", [])],
}


def crowd_answers(batch: Batch) -> None:
    """Two local workers answer every task (through the services a worker's page calls)."""
    for worker_id, answers in CROWD.items():
        worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=worker_id)
        for task, (words, category, ranks) in zip(batch.tasks.order_by("position"), answers, strict=True):
            assignment = services.assignment_accept(task=task, worker=worker)
            services.annotation_submit(
                assignment=assignment, words=words, category=category, rejected_ranks=ranks
            )


def select(page: Page, worker_id: str, words: str) -> None:
    row = page.get_by_role("row").filter(has_text=worker_id).filter(has_text=words)
    row.get_by_role("checkbox").check()


def test_requester_creates_publishes_reviews_and_exports_a_batch(
    page: Page,
    check_page: Check,
    log_in: Callable[[Page], None],
    expect_http_error: Callable[[Page, int], None],
    run: DissectionRun,
    tmp_path: Path,
) -> None:
    log_in(page)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    page.get_by_role("link", name="Create a batch from units").click()
    page.get_by_label("Title", exact=True).fill("Label conv4 of the drawn run")
    page.get_by_label("Instructions", exact=True).fill("What do the highlighted regions show?")
    page.get_by_label("Run", exact=True).select_option(label=run.name)
    page.get_by_label("Layer", exact=True).fill("conv4")
    page.get_by_label("These units").check()
    page.get_by_label("Unit numbers", exact=True).fill("1-3")
    page.get_by_label("Provider", exact=True).select_option(label="Local link")
    page.get_by_label("Workers per unit", exact=True).fill("2")
    page.get_by_label("Images per task", exact=True).fill(str(IMAGES_PER_UNIT))
    page.get_by_label("Gold units", exact=True).fill("1; color; red, red circle")
    check_page(page, "batch_form")
    page.get_by_label("Unit numbers", exact=True).fill("1-3, x")
    expect_http_error(page, 400)
    page.get_by_role("button", name="Create draft batch").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "Unit numbers: 'x' is not a unit number or a range like 8-10."
    )
    check_page(page, "batch_form_refused")
    expect(page.get_by_label("Title", exact=True)).to_have_value("Label conv4 of the drawn run")
    expect(page.get_by_label("Gold units", exact=True)).to_have_value("1; color; red, red circle")
    expect(page.get_by_label("These units")).to_be_checked()
    page.get_by_label("Unit numbers", exact=True).fill("1-3")
    page.get_by_role("button", name="Create draft batch").click()
    expect(page.get_by_role("status")).to_contain_text("Draft batch created with 3 tasks.")
    check_page(page, "batch_draft")

    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("status")).to_contain_text("Batch published.")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Batch paused.")
    check_page(page, "batch_paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("Batch published.")
    check_page(page, "batch_detail")
    batch = Batch.objects.get(title="Label conv4 of the drawn run")
    assert batch.state == Batch.State.PUBLISHED and batch.assignments_per_task == 2
    assert page.locator("code.link").inner_text().endswith(f"/w/{batch.public_id}/")
    assert [t.unit.channel for t in batch.tasks.order_by("position")] == [0, 1, 2]
    crowd_answers(batch)

    page.get_by_role("link", name="Review answers").click()
    expect(page.get_by_role("cell", name="red circle")).to_be_visible()
    for words, _, _ in CROWD["carol"]:
        select(page, "carol", words)
    page.get_by_role("button", name="Approve selected").click()
    expect(page.get_by_role("status")).to_contain_text("Approve: 3 assignment(s).")

    select(page, "dave", "blob")
    expect_http_error(page, 400)
    page.get_by_role("button", name="Reject selected").click()
    expect(page.get_by_role("alert")).to_contain_text("Rejecting needs feedback")
    check_page(page, "review_refused")
    expect(page.get_by_role("row").filter(has_text="blob").get_by_role("checkbox")).to_be_checked()
    page.get_by_label("Feedback to the worker").fill("The images show red circles, not a blob.")
    page.get_by_role("button", name="Reject selected").click()
    check_page(page, "review_confirm_reject_one")
    page.get_by_role("button", name="Reject these answers").click()
    expect(page.get_by_role("status")).to_contain_text("Reject: 1 assignment(s).")
    check_page(page, "review")

    statuses = {
        (a.worker.external_id, a.annotation.words): a.status
        for a in Assignment.objects.filter(task__batch=batch).select_related("worker", "annotation")
    }
    assert statuses == {
        ("carol", "red circle"): "approved",
        ("carol", "stripes"): "approved",
        ("carol", "green"): "approved",
        ("dave", "blob"): "rejected",
        ("dave", "lines"): "submitted",
        ("dave", "triangle"): "submitted",
    }

    downloads = {}
    for fmt in ("CSV", "JSON"):
        with page.expect_download() as download:
            page.get_by_role("link", name=f"Export {fmt}").first.click()
        assert download.value.suggested_filename == f"batch-{batch.public_id}.{fmt.lower()}"
        downloads[fmt] = tmp_path / download.value.suggested_filename
        download.value.save_as(downloads[fmt])
    with downloads["CSV"].open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert {(r["worker"], r["words"], r["status"], r["unit"]) for r in rows} == {
        ("carol", "red circle", "approved", "1"),
        ("carol", "stripes", "approved", "2"),
        ("carol", "green", "approved", "3"),
        ("dave", "blob", "rejected", "1"),
        ("dave", "lines", "submitted", "2"),
        ("dave", "triangle", "submitted", "3"),
    }
    assert {r["gold_passed"] for r in rows if r["channel"] == "0"} == {"True", "False"}
    records = json.loads(downloads["JSON"].read_text())
    assert [(r["worker"], r["words"], r["images_not_fitting"]) for r in records if r["channel"] == 0] == [
        ("carol", "red circle", [5]),
        ("dave", "blob", [1, 2, 3]),
    ]
    assert (
        next(r for r in records if r["words"] == "blob")["feedback"]
        == "The images show red circles, not a blob."
    )

    page.get_by_role("link", name="Dashboard").click()
    row = page.get_by_role("row").filter(has_text="Label conv4 of the drawn run")
    expect(row).to_contain_text("Published")
    expect(row).to_contain_text("5 / 6")  # the rejected answer's slot is open again
    check_page(page, "dashboard")
