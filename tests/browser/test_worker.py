"""The worker's side in Chromium: the batch link, preview, accept, the three questions, next task, finished;
a refused answer that keeps what was typed; a task done with the keyboard alone; and the personal link that
brings a worker back in a second browser, which a typed name never does."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from annotate import services
from annotate.models import Annotation, Assignment, Batch
from tests.browser.conftest import IMAGES_PER_UNIT, Tabs
from tests.browser.pages import WORDS, Check, answer, personal_link, start, tab_to, tick, tile

pytestmark = pytest.mark.browser

# per task: words, image numbers (1-based, as shown) that do not fit, category label
ANSWERS = [
    ("red circle", [3, 5], "Simple elements or colors"),
    ("stripes", [], "Texture or material"),
    ("green triangle", [12], "Object"),
]


def expect_answer_kept(page: Page, words: str, numbers: list[int], category: str) -> None:
    expect(page.get_by_label(WORDS)).to_have_value(words)
    for number in range(1, IMAGES_PER_UNIT + 1):
        if number in numbers:
            expect(tick(page, number)).to_be_checked()
        else:
            expect(tick(page, number)).not_to_be_checked()
    expect(page.get_by_label(category, exact=True)).to_be_checked()


def test_worker_previews_accepts_answers_every_task_and_finishes(
    page: Page, check_page: Check, make_batch: Callable[..., Batch]
) -> None:
    batch = make_batch()
    start(page, check_page, batch, "alice")
    for position, (words, numbers, category) in enumerate(ANSWERS):
        page.wait_for_url("**/w/task/*/")
        submit = page.get_by_role("button", name="Submit answer")
        expect(submit).to_be_disabled()
        expect(page.get_by_label(WORDS)).to_be_disabled()
        expect(page.locator(".tile img")).to_have_count(IMAGES_PER_UNIT)
        expect(tile(page, IMAGES_PER_UNIT)).to_be_visible()
        check_page(page, f"worker_preview_{position}")
        page.get_by_role("button", name="Accept this task").click()
        page.wait_for_url("**/w/a/*/")
        expect(submit).to_be_enabled()
        answer(page, words, numbers, category)
        for number in numbers:
            expect(tick(page, number)).to_be_checked()
        check_page(page, "worker_task" if position == 0 else f"worker_task_{position}")
        submit.click()
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    check_page(page, "worker_finished")

    stored = Annotation.objects.filter(assignment__worker__label="alice").order_by(
        "assignment__task__position"
    )
    assert [(a.words, a.rejected_ranks, a.get_category_display()) for a in stored] == [
        (words, [n - 1 for n in numbers], category) for words, numbers, category in ANSWERS
    ]
    assert all(a.assignment.status == Assignment.Status.SUBMITTED for a in stored)


def test_a_refused_answer_keeps_what_the_worker_typed(
    page: Page,
    check_page: Check,
    expect_http_error: Callable[[Page, int], None],
    make_batch: Callable[..., Batch],
) -> None:
    batch = make_batch()
    start(page, check_page, batch, "bob")
    check_page(page, "worker_preview")
    page.get_by_role("button", name="Accept this task").click()
    page.wait_for_url("**/w/a/*/")
    form_url = page.url

    # Spaces pass the browser's `required` but not the server: the page comes back with everything kept.
    answer(page, "   ", [2, 7], "Object part")
    expect_http_error(page, 400)
    page.get_by_role("button", name="Submit answer").click()
    expect(page.get_by_role("alert")).to_contain_text("write one or two words")
    check_page(page, "worker_refused_words")
    expect_answer_kept(page, "   ", [2, 7], "Object part")

    # The requester cancels the batch while the worker types: refused, and the words are kept too.
    page.get_by_label(WORDS).fill("red disc")
    services.batch_cancel(batch=batch)
    expect_http_error(page, 409)
    page.get_by_role("button", name="Submit answer").click()
    expect(page.get_by_role("alert")).to_contain_text("the answer was not stored")
    check_page(page, "worker_refused_closed")
    expect_answer_kept(page, "red disc", [2, 7], "Object part")
    assert page.url == form_url
    assert not Annotation.objects.exists()


def test_keyboard_alone_completes_a_task(
    page: Page, check_page: Check, make_batch: Callable[..., Batch], units
) -> None:
    batch = make_batch(units=units[:1])
    page.goto(f"/w/{batch.public_id}/")
    check_page(page, "worker_start")
    tab_to(page, page.get_by_label("Your worker id or name"))
    page.keyboard.type("keys-only")
    page.keyboard.press("Enter")
    page.wait_for_url("**/w/task/*/")
    check_page(page, "worker_preview")
    tab_to(page, page.get_by_role("button", name="Accept this task"))
    page.keyboard.press("Enter")
    page.wait_for_url("**/w/a/*/")

    tab_to(page, page.get_by_label(WORDS))
    page.keyboard.type("red dot")
    tab_to(page, tick(page, 2))
    page.keyboard.press("Space")
    tab_to(page, tick(page, 4))
    page.keyboard.press("Space")
    tab_to(page, page.get_by_label("Scene"))
    page.keyboard.press("Space")
    expect(page.get_by_label("Scene")).to_be_checked()
    check_page(page, "worker_task_keyboard")
    tab_to(page, page.get_by_role("button", name="Submit answer"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    check_page(page, "worker_finished")

    annotation = Annotation.objects.get(assignment__worker__label="keys-only")
    assert (annotation.words, annotation.rejected_ranks, annotation.category) == ("red dot", [1, 3], "scene")


def test_a_returned_task_goes_to_the_next_one_and_a_paused_batch_says_so(
    page: Page,
    check_page: Check,
    expect_http_error: Callable[[Page, int], None],
    make_batch: Callable[..., Batch],
) -> None:
    batch = make_batch()
    start(page, check_page, batch, "erin")
    first = page.url
    check_page(page, "worker_preview")
    page.get_by_role("button", name="Accept this task").click()
    page.wait_for_url("**/w/a/*/")
    check_page(page, "worker_task")
    page.get_by_role("button", name="Return this task without answering").click()
    page.wait_for_url("**/w/task/*/")
    assert page.url != first
    check_page(page, "worker_preview_after_return")
    assert Assignment.objects.get(worker__label="erin").status == Assignment.Status.RETURNED

    services.batch_pause(batch=batch)
    expect_http_error(page, 409)
    page.goto(f"/w/{batch.public_id}/")
    expect(page.get_by_role("alert")).to_have_text("This batch is paused and takes no new work.")
    check_page(page, "worker_batch_paused")


def test_the_personal_link_brings_the_worker_back_and_a_typed_name_does_not(
    tabs: Tabs, page: Page, check_page: Check, make_batch: Callable[..., Batch]
) -> None:
    batch = make_batch()
    start(page, check_page, batch, "alice")
    expect(page.get_by_text("Bookmark your personal link to come back")).to_be_visible()
    check_page(page, "worker_preview_personal_link")
    page.get_by_role("button", name="Accept this task").click()
    page.wait_for_url("**/w/a/*/")
    check_page(page, "worker_task_personal_link")
    link, task_page = personal_link(page), page.url
    assert "/me/" in link

    # Someone else types the same name in another browser: a new worker, who never sees alice's task.
    other = tabs.open()
    start(other, check_page, batch, "alice")
    check_page(other, "worker_preview_same_name")
    assert other.url != task_page
    assert personal_link(other) != link

    # Alice, in a second browser of her own, opens her personal link and is back on her task.
    again = tabs.open()
    again.goto(link)
    again.wait_for_url(task_page)
    expect(again.get_by_role("button", name="Submit answer")).to_be_enabled()
    check_page(again, "worker_task_from_personal_link")
    answer(again, "red circle", [], "Simple elements or colors")
    again.get_by_role("button", name="Submit answer").click()
    again.wait_for_url("**/w/task/*/")
    check_page(again, "worker_preview_after_personal_link")
    stored = Annotation.objects.select_related("assignment__worker").get().assignment
    assert task_page.endswith(f"/w/a/{stored.public_id}/") and stored.worker.label == "alice"


PHONE = {"width": 375, "height": 740}
NO_HORIZONTAL_SCROLL = "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def test_on_a_phone_the_worker_sees_pay_progress_and_their_decisions_without_scrolling_sideways(
    page: Page, check_page: Check, make_batch: Callable[..., Batch]
) -> None:
    batch = make_batch()
    page.set_viewport_size(PHONE)
    page.goto(f"/w/{batch.public_id}/")
    facts = page.get_by_role("list", name="About this batch")
    expect(facts).to_contain_text("0.10 USD per approved task")
    expect(facts).to_contain_text("up to 10 minutes per task")
    expect(facts).to_contain_text("3 tasks")
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    check_page(page, "worker_start_375")
    page.get_by_label("Your worker id or name").fill("phone")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**/w/task/*/")
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    check_page(page, "worker_preview_375")
    page.get_by_role("button", name="Accept this task").click()
    page.wait_for_url("**/w/a/*/")
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    check_page(page, "worker_task_375")
    answer(page, "red circle", [3, 5], "Simple elements or colors")
    page.get_by_role("button", name="Submit answer").click()
    expect(page.get_by_role("status")).to_have_text("Saved — task 1 of 3.")
    check_page(page, "worker_saved_375")

    first = Assignment.objects.get(worker__label="phone")
    services.assignment_approve(assignment=first)
    services.assignment_send_bonus(assignment=first, amount=Decimal("0.25"), reason="Careful work")
    page.get_by_role("link", name="See your answers, decisions and bonuses").click()
    expect(page.get_by_role("heading", name=f"Your answers in “{batch.title}”")).to_be_visible()
    task = page.locator("#answer-1")
    expect(task).to_contain_text("red circle")
    expect(task).to_contain_text("3, 5")
    expect(task).to_contain_text("Approved")
    expect(task).to_contain_text("0.25 USD")
    expect(page.locator("#status-summary")).to_contain_text("Earned so far: 0.35 USD")
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    check_page(page, "worker_status_375")
