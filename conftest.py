"""Test-wide setup: plain HTTP and plain static storage for the test client and live server, and CI's
rule that no test may be skipped.

With UNITSCOPE_REQUIRE_SERVICES=1 (set by .ci/run) a skipped test fails the session: a test that needs
PostgreSQL, Redis or Chromium must run in CI, never quietly step aside.
"""

import os
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _plain_http_and_static(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Production defaults redirect to HTTPS and expect a collectstatic manifest; tests speak plain HTTP.
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.STATIC_ROOT = tmp_path_factory.getbasetemp()
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("UNITSCOPE_REQUIRE_SERVICES") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        for report in skipped:
            print(f"\nSKIPPED IN CI (not allowed): {report.nodeid}: {report.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
