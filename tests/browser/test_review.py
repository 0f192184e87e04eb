"""Review at scale in Chromium: numbered tiles, filters through the form, select all, a reject and a block
that first say what they will do, approve the rest, the crowd worker page, and a cancel that asks first."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from annotate import services
from annotate.models import Assignment, Batch, CrowdWorker, Provider
from runs.models import Unit
from tests.browser.pages import Check

pytestmark = pytest.mark.browser
Status = Assignment.Status

# worker -> one (words, category, rejected ranks) per task, in batch order; unit 0 is gold (color: red)
CROWD = {
    "carol": [("red", "color", [4]), ("stripes", "texture", []), ("green", "color", [1, 2])],
    "dave": [("blob", "object", list(range(9))), ("lines", "texture", [11]), ("triangle", "object", [])],
}


def _answer_all(batch: Batch) -> None:
    for worker_id, answers in CROWD.items():
        worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=worker_id)
        for task, (words, category, ranks) in zip(batch.tasks.order_by("position"), answers, strict=True):
            assignment = services.assignment_accept(task=task, worker=worker)
            services.annotation_submit(
                assignment=assignment, words=words, category=category, rejected_ranks=ranks
            )


def _statuses() -> dict[str, str]:
    return {
        a.annotation.words: a.status
        for a in Assignment.objects.select_related("annotation").filter(annotation__isnull=False)
    }


def test_review_with_filters_confirmations_and_the_crowd_worker_page(
    page: Page,
    check_page: Check,
    log_in: Callable[[Page], None],
    make_batch: Callable[..., Batch],
    units: list[Unit],
) -> None:
    batch = make_batch(assignments_per_task=2, gold={units[0].pk: services.GoldAnswer("color", ("red",))})
    _answer_all(batch)
    log_in(page)
    review = f"/batches/{batch.public_id}/review/"
    page.goto(review)
    # Tiles are numbered 1..12 as the worker saw them; a ticked one names who ticked it.
    expect(page.locator(".review-tiles .number")).to_have_count(3 * 12)
    expect(page.get_by_role("img", name="Image 5, ticked as not fitting by carol, dave")).to_be_visible()
    expect(page.get_by_role("img", name="Image 12", exact=True).first).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="carol").filter(has_text="green")).to_contain_text("2, 3")
    check_page(page, "review_numbered")

    # Filters: failed gold, then carol's pending answers.
    page.get_by_label("Failed a check item (gold)").check()
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("1 unit(s) with answers that match the filters")).to_be_visible()
    expect(page.get_by_role("cell", name="blob", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="stripes", exact=True)).to_have_count(0)
    check_page(page, "review_filter_failed_gold")
    page.get_by_label("Failed a check item (gold)").uncheck()
    page.get_by_label("Decision").select_option(label="Pending")
    page.get_by_label("Crowd worker", exact=True).select_option(label="carol")
    page.get_by_role("button", name="Show").click()
    answers = page.locator("#review-form")
    expect(answers.get_by_role("cell", name="dave")).to_have_count(0)
    expect(answers.get_by_role("row").filter(has_text="carol")).to_have_count(3)
    check_page(page, "review_filter_worker")

    # Select all, reject: a confirmation that says what will happen; going back changes nothing.
    page.get_by_label("Select every answer on this page").check()
    for box in page.locator('#review-form input[name="assignments"]').all():
        expect(box).to_be_checked()
    page.get_by_label("Feedback to the worker").fill("Please look again.")
    page.get_by_role("button", name="Reject selected").click()
    expect(page.get_by_role("heading", name="Reject 3 answer(s)?")).to_be_visible()
    expect(page.get_by_text("Nothing has changed yet")).to_be_visible()
    check_page(page, "review_confirm_reject")
    page.get_by_role("link", name="Go back without changing anything").click()
    check_page(page, "review_after_going_back")
    assert set(_statuses().values()) == {Status.SUBMITTED}

    # Tick dave's failed gold answer, approve the rest, then reject the ticked one after confirming.
    page.goto(review)
    page.get_by_role("row").filter(has_text="blob").get_by_role("checkbox").check()
    page.get_by_role("button", name="Approve the rest").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Approved the rest: 5 pending answer(s); the 1 ticked answer(s) were left as they were."
    )
    page.get_by_role("row").filter(has_text="blob").get_by_role("checkbox").check()
    page.get_by_label("Feedback to the worker").fill("The images show red, not a blob.")
    page.get_by_role("button", name="Reject selected").click()
    page.get_by_role("button", name="Reject these answers").click()
    expect(page.get_by_role("status")).to_contain_text("Reject: 1 assignment(s).")
    check_page(page, "review")
    assert _statuses() == {
        "red": Status.APPROVED,
        "stripes": Status.APPROVED,
        "green": Status.APPROVED,
        "blob": Status.REJECTED,
        "lines": Status.APPROVED,
        "triangle": Status.APPROVED,
    }

    # The crowd worker page: gold accuracy, decisions; block after confirming, then unblock.
    page.get_by_role("link", name="dave", exact=True).first.click()
    expect(page.get_by_role("heading", name="Crowd worker dave")).to_be_visible()
    expect(page.get_by_role("row", name="Accuracy on gold")).to_contain_text("0 % (0 of 1 check items right)")
    expect(page.get_by_role("row", name="Decisions")).to_contain_text("2 approved · 1 rejected · 0 pending")
    check_page(page, "crowd_worker")
    page.get_by_label("Reason for blocking").fill("Fails the check items")
    page.get_by_role("button", name="Block").click()
    expect(page.get_by_role("heading", name="Block dave?")).to_be_visible()
    check_page(page, "crowd_worker_confirm_block")
    assert not CrowdWorker.objects.get(external_id="dave").blocked
    page.get_by_role("button", name="Block this crowd worker").click()
    expect(page.get_by_role("status")).to_contain_text("Blocked dave.")
    check_page(page, "crowd_worker_blocked")
    page.get_by_role("button", name="Unblock dave").click()
    expect(page.get_by_role("status")).to_contain_text("Unblocked dave")
    check_page(page, "crowd_worker_unblocked")
    assert not CrowdWorker.objects.get(external_id="dave").blocked

    # Cancel asks first; pause does not.
    page.goto(f"/batches/{batch.public_id}/")
    check_page(page, "batch_detail_review")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Batch paused.")
    page.get_by_role("button", name="Cancel batch").click()
    expect(page.get_by_text("is cancelled for good")).to_be_visible()
    check_page(page, "batch_confirm_cancel")
    batch.refresh_from_db()
    assert batch.state == Batch.State.PAUSED
    page.get_by_role("button", name="Cancel the batch for good").click()
    expect(page.get_by_role("status")).to_contain_text("Batch cancelled.")
    check_page(page, "batch_cancelled")
