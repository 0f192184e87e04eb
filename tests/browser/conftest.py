"""Browser tests: Playwright for Python driving Debian's Chromium (never a downloaded browser) against
pytest-django's live server.

Every page a test opens is tracked: console errors and uncaught exceptions fail the test at teardown, and
so does a page the test navigated to but never passed through `check_page`, which asserts that every image
has alt text, every visible form control has a label and no image is broken, then saves a full-page
screenshot under the git-ignored `screenshots/` folder (the README's images are copied from there).

Chromium is started once for this package (the folder has an __init__.py for that): Playwright's sync API
keeps an asyncio loop running in the test thread, so it must stop before the rest of the session runs.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from annotate import services
from annotate.models import Batch
from runs.models import DissectionRun, Unit
from tests.factories import shared_project

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
VIEWPORT = {"width": 1100, "height": 800}
# Generous: two shared cores may be busy with the rest of the suite; a passing step never waits this long.
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)
STAFF_PASSWORD = "pw-for-browser-tests-1234"
UNITS = 3
IMAGES_PER_UNIT = 12

# Accessibility problems of the page in the browser: images without alt text, broken images, role="img"
# drawings (the SVG plots) without a name, duplicate ids, and visible form controls that no label names
# (label[for], a wrapping label, aria-label or aria-labelledby).
_AUDIT_JS = """() => {
  const describe = (el) => el.outerHTML.slice(0, 160);
  const problems = [];
  for (const img of document.images) {
    if (!(img.getAttribute("alt") || "").trim()) problems.push("image without alt text: " + describe(img));
    if (img.complete && img.naturalWidth === 0) problems.push("broken image: " + describe(img));
  }
  const named = (el) => (el.getAttribute("aria-label") || "").trim()
    || (el.getAttribute("aria-labelledby") || "").split(/\\s+/).some(
         (id) => id && document.getElementById(id) && document.getElementById(id).textContent.trim());
  for (const el of document.querySelectorAll("[role=img]")) {
    if (!named(el)) problems.push("role=img drawing without a name: " + describe(el));
  }
  const seen = new Set();
  for (const el of document.querySelectorAll("[id]")) {
    if (seen.has(el.id)) problems.push("duplicate id (labels and aria point to the first only): " + el.id);
    seen.add(el.id);
  }
  const controls = document.querySelectorAll("input, select, textarea");
  for (const el of controls) {
    if (["hidden", "submit", "button", "reset", "image"].includes(el.type)) continue;
    if (!el.checkVisibility()) continue;
    const labelled = (el.labels && [...el.labels].some((l) => l.textContent.trim())) || named(el);
    if (!labelled) problems.push("form control without a label: " + describe(el));
  }
  return problems;
}"""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Keep the call phase's report on the item, so `tabs` knows at teardown whether the test passed."""
    report = yield
    if report.when == "call":
        item.report_call = report  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def _plain_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The live server builds its middleware once, when it starts: it must start speaking plain HTTP (the
    root conftest's per-test overrides come too late for SecurityMiddleware's redirect and HSTS, and for
    WhiteNoise's static folder)."""
    with override_settings(
        SECURE_SSL_REDIRECT=False, SECURE_HSTS_SECONDS=0, STATIC_ROOT=tmp_path_factory.mktemp("static")
    ):
        yield


@pytest.fixture(scope="session")
def live_server(_plain_http_server: None, live_server: Any) -> Any:
    return live_server


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """Playwright's sync API for the browser tests only: while it runs, this thread has a running asyncio
    loop, which Django's ORM (called from test code between browser steps) must be told to accept, and
    which must be gone before any other test of the session runs."""
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as p:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class PageLog:
    """What one tab did: console errors, navigations, and the URLs that `check_page` audited."""

    errors: list[str] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    allowed_errors: list[re.Pattern[str]] = field(default_factory=list)
    unchecked_ok: list[re.Pattern[str]] = field(default_factory=list)


class Tabs:
    """Opens browser tabs, each in its own context (its own cookies: one person per tab)."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser, self.base_url = browser, base_url
        self.logs: dict[int, tuple[Page, PageLog]] = {}
        self.contexts: list[BrowserContext] = []

    def open(self) -> Page:
        context = self.browser.new_context(base_url=self.base_url, viewport=VIEWPORT, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        log = PageLog()
        page.on("console", lambda message: _on_console(log, message))
        page.on("pageerror", lambda error: log.errors.append(f"uncaught exception: {error}"))
        page.on("framenavigated", lambda frame: frame == page.main_frame and log.visited.append(frame.url))
        self.logs[id(page)] = (page, log)
        return page

    def log(self, page: Page) -> PageLog:
        return self.logs[id(page)][1]

    def close(self, *, test_passed: bool) -> list[str]:
        """Close every context; return every problem seen: console errors, and pages never checked (only
        worth saying when the test got to its end)."""
        for context in self.contexts:
            context.close()
        problems = []
        for _page, log in self.logs.values():
            problems += log.errors
            for url in log.visited if test_passed else []:
                if (
                    url != "about:blank"
                    and url not in log.checked
                    and not any(pattern.search(url) for pattern in log.unchecked_ok)
                ):
                    problems.append(f"page opened but never checked with check_page: {url}")
        return problems


def _on_console(log: PageLog, message: ConsoleMessage) -> None:
    if message.type != "error":
        return
    text = f"console error: {message.text} ({message.location.get('url', '')})"
    allowed = next((pattern for pattern in log.allowed_errors if pattern.search(text)), None)
    if allowed is None:
        log.errors.append(text)
    else:
        log.allowed_errors.remove(allowed)


@pytest.fixture
def tabs(browser: Browser, live_server: Any, request: pytest.FixtureRequest) -> Iterator[Tabs]:
    """`tabs.open()` gives a fresh tab on the live server; at teardown no tab may have logged an error."""
    opened = Tabs(browser, live_server.url)
    yield opened
    call = getattr(request.node, "report_call", None)
    problems = opened.close(test_passed=call is not None and call.passed)
    assert not problems, "\n".join(problems)


@pytest.fixture
def page(tabs: Tabs) -> Page:
    return tabs.open()


@pytest.fixture
def check_page(tabs: Tabs) -> Callable[[Page, str], None]:
    """check_page(page, name): audit the page now shown (alt text, labels, no broken image) and save
    `screenshots/<name>.png`."""

    def check(page: Page, name: str) -> None:
        page.wait_for_load_state("load")
        problems = page.evaluate(_AUDIT_JS)
        assert not problems, f"{name} ({page.url}):\n" + "\n".join(problems)
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        tabs.log(page).checked.add(page.url)

    return check


@pytest.fixture
def expect_http_error(tabs: Tabs) -> Callable[[Page, int], None]:
    """expect_http_error(page, status): the next page answers `status` on purpose (a 4xx with the form
    shown again), so Chromium's one 'Failed to load resource' line for it is not an error (once)."""

    def allow(page: Page, status: int) -> None:
        tabs.log(page).allowed_errors.append(
            re.compile(rf"Failed to load resource: the server responded with a status of {status} ")
        )

    return allow


# --- test data, built with the app's services --------------------------------------------------------------


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def run(transactional_db: None) -> DissectionRun:
    """A run of six drawn units (conv4 #0..#5, 12 highlighted images each) imported with `units_import`."""
    from runs.services import units_import
    from tests.drawn_units import draw_unit_folders

    with tempfile.TemporaryDirectory() as folder:
        draw_unit_folders(Path(folder))
        units_import(project=shared_project(), run_name="browser run", directory=Path(folder))
    return DissectionRun.objects.get(name="browser run")


@pytest.fixture
def units(run: DissectionRun) -> list[Unit]:
    """The first UNITS units of the run: a worker flow through every task stays short."""
    return list(run.units.order_by("channel")[:UNITS])


@pytest.fixture
def make_batch(units: list[Unit]) -> Callable[..., Batch]:
    """make_batch(publish=True, units=, **batch fields): a batch through `services.batch_create`."""

    def make(publish: bool = True, **fields: Any) -> Batch:
        fields.setdefault("assignments_per_task", 1)
        fields.setdefault("images_per_task", IMAGES_PER_UNIT)
        fields.setdefault("title", "Label the units of conv4")
        fields.setdefault("instructions", "Look at the highlighted regions. What do most of them show?")
        fields.setdefault("reward", Decimal("0.10"))
        fields.setdefault("assignment_duration", timedelta(minutes=10))
        batch = services.batch_create(units=fields.pop("units", units), **fields)
        if publish:
            services.batch_publish(batch=batch)
        return batch

    return make


@pytest.fixture
def staff(django_user_model: Any, transactional_db: None) -> Any:
    """A requester, member of the project the fixtures' runs and batches are in."""
    user = django_user_model.objects.create_user("requester", password=STAFF_PASSWORD, is_staff=True)
    shared_project().members.add(user)
    return user


@pytest.fixture
def log_in(check_page: Callable[[Page, str], None], staff: Any) -> Callable[[Page], None]:
    """log_in(page): the requester logs in through the login form and lands on the dashboard (both
    pages checked)."""

    def do(page: Page) -> None:
        page.goto("/accounts/login/")
        check_page(page, "login")
        page.get_by_label("Username").fill(staff.username)
        page.get_by_label("Password").fill(STAFF_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/")
        check_page(page, "dashboard_after_login")

    return do
