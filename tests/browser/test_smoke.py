"""Playwright starts Debian's Chromium and reaches the live server."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import CHROMIUM

pytestmark = pytest.mark.browser


def test_chromium_is_debians_and_renders_a_data_url(browser: Browser) -> None:
    debian = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=True).stdout
    assert browser.browser_type.name == "chromium"
    assert browser.version in debian.split()
    page = browser.new_page()
    try:
        page.goto("data:text/html,<title>unitscope smoke</title><p id=p>rendered</p>")
        assert page.title() == "unitscope smoke"
        assert page.locator("#p").inner_text() == "rendered"
    finally:
        page.close()


def test_login_page_loads_with_no_console_error(page: Page, check_page: Callable[[Page, str], None]) -> None:
    response = page.goto("/accounts/login/")
    assert response is not None and response.status == 200
    assert page.title() == "Log in · unitscope"
    check_page(page, "login")
