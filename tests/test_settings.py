"""Settings come from the environment with safe defaults, and production settings pass the deploy check."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    unset = {"DEBUG", "SECURE_SSL", "DATABASE_URL", "SECRET_KEY"}
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_under_production_settings() -> None:
    result = _run(
        ["check", "--deploy", "--fail-level", "WARNING"],
        SECRET_KEY="x" * 20 + "production-secret-key-of-enough-length-and-variety-1234567890",
        ALLOWED_HOSTS="unitscope.example.org",
        DATABASE_URL="postgres://u@127.0.0.1:5432/prod",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = _run(["check", "--deploy"], ALLOWED_HOSTS="unitscope.example.org")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr and "DEBUG=1" in result.stderr


def test_the_embedded_key_serves_debug_only_and_says_it_is_insecure() -> None:
    result = _run(["check", "--deploy", "--fail-level", "WARNING"], DEBUG="1", SECURE_SSL="1")
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr  # Django's "insecure key" warning


def test_bad_boolean_names_the_variable() -> None:
    result = _run(["check"], DEBUG="maybe", SECRET_KEY="x")
    assert result.returncode != 0
    assert "DEBUG='maybe'" in result.stderr


@pytest.mark.parametrize("value,expected", [("1", True), ("off", False), ("", False)])
def test_envbool(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    from config.settings import envbool

    monkeypatch.setenv("SOME_FLAG", value)
    assert envbool("SOME_FLAG", False) is expected


def test_login_throttle_and_proxy_settings_come_from_the_environment() -> None:
    script = (
        "from django.conf import settings as s; "
        "print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME, s.AXES_LOCKOUT_PARAMETERS, s.PROXY_COUNT)"
    )
    result = _run(
        ["shell", "-c", script], DEBUG="1", AXES_FAILURE_LIMIT="4", AXES_COOLOFF_HOURS="3", BEHIND_PROXY="1"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "4 3:00:00 [['username', 'ip_address']] 1"
    default = _run(["shell", "-c", script], DEBUG="1")
    assert default.stdout.split("\n")[-2] == "10 1:00:00 [['username', 'ip_address']] 0"


def test_media_has_no_public_route() -> None:
    from django.urls import resolve

    assert resolve("/media/runs/1/conv4/report/report.html").url_name == "media"
    from config import settings

    assert not hasattr(settings, "SERVE_MEDIA") and settings.MEDIA_URL == "/media/"
