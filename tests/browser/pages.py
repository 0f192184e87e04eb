"""What a person does on our pages, in Playwright terms, shared by the browser tests."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Locator, Page

from annotate.models import Batch

Check = Callable[[Page, str], None]
"""The `check_page` fixture: check_page(page, screenshot name)."""
WORDS = "Write one or two words"
"""The start of the label of the task's words field."""


def tile(page: Page, number: int) -> Locator:
    """The image a worker sees as number `number` (clicking it ticks its checkbox)."""
    return page.get_by_role("img", name=re.compile(rf"^Image {number} of "))


def tick(page: Page, number: int) -> Locator:
    """The checkbox of image number `number`."""
    return page.get_by_role("checkbox").nth(number - 1)


def answer(page: Page, words: str, numbers: list[int], category: str) -> None:
    """Fill the label task with the mouse: words, the images (1-based numbers) that do not fit, a category."""
    page.get_by_label(WORDS).fill(words)
    for number in numbers:
        tile(page, number).click()
    page.get_by_label(category, exact=True).check()


def tab_to(page: Page, target: Locator, limit: int = 60) -> None:
    """Press Tab until `target` has the keyboard focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"{target} cannot be reached with Tab")


def start(page: Page, check_page: Check, batch: Batch, worker_id: str) -> None:
    """Open the batch link of a local batch and start as a new worker named `worker_id` (the worker's label);
    ends on the first task's preview, after the personal link the start hands out."""
    page.goto(f"/w/{batch.public_id}/")
    check_page(page, "worker_start")
    page.get_by_label("Your worker id or name").fill(worker_id)
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**/w/task/*/")


def personal_link(page: Page) -> str:
    """The personal link a local worker's task page tells them to bookmark."""
    return page.locator("#personal-link").get_attribute("href") or ""
