"""Test-wide setup: plain HTTP for the test client, and CI's rule that no test may be skipped.

With UNITSCOPE_REQUIRE_SERVICES=1 (set by .ci/run) a skipped test fails the session: a test that needs
PostgreSQL, Redis or Chromium must run in CI, never quietly step aside.
"""
import os

import pytest

os.environ.setdefault("SECURE_SSL", "0")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("UNITSCOPE_REQUIRE_SERVICES") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        for report in skipped:
            print(f"\nSKIPPED IN CI (not allowed): {report.nodeid}: {report.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
