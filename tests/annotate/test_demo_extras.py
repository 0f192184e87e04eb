"""The demo's slow extras: each builds once as a job of the demo project, reports progress the dashboard
shows with an ETA, and one that fails is shown with its error while the next still builds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.test import Client

from annotate import demo_extras
from annotate.demo_extras import DemoExtra, demo_extras_build
from runs.models import Job
from tests.factories import logged_in, staff_user

pytestmark = pytest.mark.django_db

CALLS: list[str] = []


def made_twice(*, project: Any, user: Any, progress: Any) -> str:
    CALLS.append("made")
    progress(1, 4, "first quarter")
    assert Job.objects.get(key="demo:made").done == 1
    progress(4, 4, "")
    return "/runs/"


def broken(*, project: Any, user: Any, progress: Any) -> str:
    progress(1, 3, "training")
    raise ValueError("the toy did not converge")


EXTRAS = [
    DemoExtra("broken", "A broken extra", f"{__name__}.broken"),
    DemoExtra("made", "A training series", f"{__name__}.made_twice"),
]


def test_each_extra_is_built_once_and_a_failure_does_not_stop_the_next(django_user_model: Any) -> None:
    user = staff_user(django_user_model, "requester")
    CALLS.clear()
    jobs = demo_extras_build(user=user, extras=EXTRAS)
    assert [(job.key, job.status) for job in jobs] == [("demo:broken", "failed"), ("demo:made", "done")]
    assert "ValueError: the toy did not converge" in jobs[0].error
    assert jobs[1].link == "/runs/" and jobs[1].percent == 100
    demo_extras_build(user=user, extras=EXTRAS)
    assert CALLS == ["made"]  # done once, skipped after


def test_the_dashboard_shows_a_running_extra_with_its_progress_and_a_failed_one_with_its_error(
    django_user_model: Any,
) -> None:
    user = staff_user(django_user_model, "requester")
    demo_extras_build(user=user, extras=EXTRAS[:1])
    project = Job.objects.get(key="demo:broken").project
    project.members.add(user)
    Job.objects.create(
        project=project, key="demo:gan", title="A toy <GAN>", status="running", done=3, total=4, note="ep 3"
    )
    client: Client = logged_in(user)
    page = client.get("/").content.decode()
    assert "Being prepared" in page and 'aria-valuenow="75"' in page and "ep 3" in page
    assert "A toy &lt;GAN&gt;" in page and "the toy did not converge" in page
    assert "window.location.reload" in page  # refreshes while something runs


def test_the_dashboard_of_another_project_shows_nothing_of_the_demo(django_user_model: Any) -> None:
    demo_extras_build(user=staff_user(django_user_model, "requester"), extras=EXTRAS[:1])
    outsider = logged_in(staff_user(django_user_model, "outsider"))
    assert "Being prepared" not in outsider.get("/").content.decode()


def test_the_registry_names_builders_that_import(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.utils.module_loading import import_string

    for extra in demo_extras.EXTRAS:
        assert callable(import_string(extra.build)), extra.key


WORKER: list[str] = []


def needs_a_worker(*, project: Any, user: Any, progress: Any) -> str:
    assert WORKER == ["started"], "the extras queue worker tasks: something must consume them"
    return ""


def test_built_in_the_foreground_the_extras_have_a_worker_to_run_their_tasks(
    django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextmanager
    def worker() -> Iterator[None]:
        WORKER.append("started")
        yield
        WORKER.append("stopped")

    WORKER.clear()
    extra = DemoExtra("worker", "Needs a worker", f"{__name__}.needs_a_worker")
    monkeypatch.setattr(demo_extras, "EXTRAS", (extra,))
    monkeypatch.setattr(demo_extras, "needs_in_process_worker", lambda: True)
    monkeypatch.setattr(demo_extras, "in_process_worker", worker)
    [job] = demo_extras.demo_extras_build_with_worker(user=staff_user(django_user_model, "requester"))
    assert job.status == "done", job.error
    assert WORKER == ["started", "stopped"]
