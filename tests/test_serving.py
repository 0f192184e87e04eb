"""Production serving (`make serve`): gunicorn's configuration loads the app, whitenoise serves collected
static files with DEBUG off, and media are never static: only the permission view serves them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.templatetags.static import static
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent


def test_gunicorn_loads_the_app_with_its_configuration(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DEBUG", "DATABASE_URL"}},
        "SECRET_KEY": "serving-test-key-" + "x" * 40,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.py", "--check-config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_whitenoise_serves_collected_static_files_with_debug_off(settings: Any, tmp_path: Path) -> None:
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path / "staticfiles"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    call_command("collectstatic", "--noinput", verbosity=0)
    url = static("admin/css/base.css")
    assert re.fullmatch(r"/static/admin/css/base\.[0-9a-f]{12}\.css", url), url  # the manifest's name
    response = Client().get(url)  # a new client loads the middleware, which reads STATIC_ROOT
    assert response.status_code == 200
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert body == (settings.STATIC_ROOT / url.removeprefix("/static/")).read_bytes()
    assert "immutable" in response["Cache-Control"]  # a hashed name never changes: cached for good
    compressed = Client().get(url, headers={"accept-encoding": "gzip"})
    assert compressed["Content-Encoding"] == "gzip"
    assert Client().get("/static/admin/css/nothing-here.css").status_code == 404


@pytest.mark.django_db
def test_media_are_served_only_through_the_permission_view(settings: Any) -> None:
    settings.DEBUG = False
    stored = Path(settings.MEDIA_ROOT) / "runs" / "1" / "conv4" / "report.html"
    stored.parent.mkdir(parents=True)
    stored.write_text("<p>private</p>")
    response = Client().get("/media/runs/1/conv4/report.html")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(("arguments", "port"), [([], "8000"), (["PORT=8001"], "8001")])
def test_make_run_and_serve_listen_on_the_port_asked(arguments: list[str], port: str) -> None:
    result = subprocess.run(
        ["make", "--dry-run", "run", "serve", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    commands = result.stdout
    assert f"manage.py demo --site http://127.0.0.1:{port}" in commands
    assert f"manage.py serve_demo 127.0.0.1:{port}" in commands
    assert f"gunicorn --config config/gunicorn.py --bind 127.0.0.1:{port}" in commands
    assert "DEBUG=0" in commands and "collectstatic --noinput" in commands
    assert "--quiet" not in commands
