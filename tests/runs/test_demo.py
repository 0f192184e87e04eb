"""`make run`'s demo: a real dissection of the toy network through the in-process worker, then a published
local batch with two gold units from the probe set's ground truth; idempotent; serve_demo runs the worker
thread and the server."""

from __future__ import annotations

import io
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import call_command

from annotate import demo
from annotate.demo import DEMO_BATCH, DEMO_SIMULATED_ANSWERS, DEMO_VERIFICATION
from annotate.models import Annotation, Batch
from annotate.services.comparison import comparison_figures
from runs.models import AuditEvent, DissectionRun, Network, ProbeSet, Unit, UnitImage
from tests.factories import logged_in

pytestmark = [pytest.mark.slow]


@pytest.fixture
def demo_cache(demo_cache: Path, toy_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared demo cache with the session's toy network too (trained on the same probe set), and a known
    password."""
    shutil.copy(toy_weights, demo_cache / "toy.pt")
    monkeypatch.setenv("DEMO_PASSWORD", "demo-secret-42")
    return demo_cache


def test_demo_dissects_through_the_in_process_worker_and_publishes_a_batch(
    shared_db: str, demo_cache: Path, django_user_model
) -> None:
    first, second, progress = io.StringIO(), io.StringIO(), io.StringIO()
    call_command("demo", stdout=first, stderr=progress)
    call_command("demo", stdout=second)
    run = DissectionRun.objects.get()
    assert run.status == "done" and run.layers == ["conv3", "conv4"] and run.network.name == "toy (demo)"
    assert Network.objects.count() == ProbeSet.objects.count() == 1
    assert Unit.objects.count() == 2 * 128 and UnitImage.objects.count() == 2 * 128 * demo.RUN_TOPK
    assert "100%" in progress.getvalue() and "shards" in progress.getvalue()
    batch = Batch.objects.get(title=DEMO_BATCH)
    assert batch.state == Batch.State.PUBLISHED and batch.tasks.count() == demo.BATCH_UNITS
    # the simulated crowd answered part of it once (the second call added nothing), leaving slots for people
    assert Annotation.objects.filter(assignment__task__batch=batch).count() == DEMO_SIMULATED_ANSWERS
    assert batch.tasks.count() * batch.assignments_per_task > DEMO_SIMULATED_ANSWERS
    verification = Batch.objects.get(title=DEMO_VERIFICATION)
    assert verification.state == Batch.State.PUBLISHED
    assert set(verification.tasks.values_list("kind", flat=True)) == {"verify"}
    assert Annotation.objects.filter(
        assignment__task__batch=verification, verify_answer__isnull=False
    ).exists()
    gold = list(batch.tasks.filter(is_gold=True).select_related("unit"))
    assert len(gold) == 2 and {t.position for t in gold} == {1, 4}
    for task in gold:
        assert task.unit.interpretable and task.gold_words == [task.unit.label]
        assert task.gold_category == demo.HUMAN_CATEGORY[task.unit.concept_category]
    tasks = list(batch.tasks.select_related("unit").order_by("position"))
    assert {t.unit.layer for t in tasks} == {"conv3", "conv4"}, "the comparison has two layers to compare"
    concepts = {(t.unit.concept_category, t.unit.label) for t in tasks}
    assert len(concepts) >= 6 and len({category for category, _ in concepts}) >= 3, concepts
    stored, stale = comparison_figures(batch=batch, aggregation="dawid_skene")  # computed by the demo
    assert not stale and list(stored.summary["layers"]) == ["conv3", "conv4"]
    assert (stored.summary["units_counted"], stored.summary["units_apart"]) == (9, 1)
    assert set(stored.plots) == {"confusion", "agreement", "scatter", "verification"}
    answers = [t.assignments.count() for t in tasks]
    assert answers == [3] * 9 + [1, 0, 0], "one unit is below the comparison's minimum of two answers"
    for out in (first, second):
        assert "user requester  password demo-secret-42" in out.getvalue()
        assert f"/w/{batch.public_id}/" in out.getvalue() and f"/runs/{run.pk}/" in out.getvalue()
        assert f"/batches/{batch.public_id}/comparison/" in out.getvalue()
    user = django_user_model.objects.get(username="requester")
    assert user.is_staff and user.check_password("demo-secret-42")
    trail = AuditEvent.objects.filter(batch_key=batch.public_id)
    assert sorted(trail.values_list("action", flat=True)) == sorted(
        ["publish", "qualification", *["approve"] * demo.DEMO_APPROVED, "bonus"]
    ), "the second call decided nothing again"
    assert set(trail.values_list("actor_name", flat=True)) == {"requester"}
    (qualification,) = batch.qualifications.all()
    assert sorted(qualification.results.values_list("status", flat=True)) == ["failed", "passed"]
    page = logged_in(user).get(f"/batches/{batch.public_id}/").content.decode()
    assert 'id="audit-trail"' in page and "Approve" in page and "Bonus" in page
    assert qualification.name in page
    for status in ("Passed", "Failed"):
        assert f'class="qualification-{status.lower()}">{status}<' in page


def test_serve_demo_starts_the_worker_then_the_server(
    shared_db: str, monkeypatch: pytest.MonkeyPatch, django_user_model
) -> None:
    """The wiring: the worker thread runs before the demo is built (it dissects through it) and while the
    server runs. The build itself is the test above's; here a stand-in returns content made by hand."""
    from annotate.management.commands import serve_demo
    from workers import inprocess

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setenv("DEMO_PASSWORD", "demo-secret-42")

    def build(*, password: str, progress: object) -> demo.DemoContent:
        calls.append(("build", list(inprocess._running)))
        user = django_user_model.objects.create_user("requester", password=password)
        return demo.DemoContent(
            user=user,
            username="requester",
            password=password,
            batch=SimpleNamespace(public_id=uuid.uuid4()),  # type: ignore[arg-type]
            run=SimpleNamespace(pk=1),  # type: ignore[arg-type]
        )

    def runserver(*args: object, **kwargs: object) -> None:
        calls.append((args, kwargs, list(inprocess._running)))

    monkeypatch.setattr(serve_demo, "demo_content_build", build)
    monkeypatch.setattr(serve_demo, "call_command", runserver)
    out = io.StringIO()
    started = []
    monkeypatch.setattr(serve_demo.demo_extras, "demo_extras_start", lambda *, user: started.append(user))
    call_command("serve_demo", "127.0.0.1:8123", stdout=out, stderr=io.StringIO())
    assert [user.username for user in started] == ["requester"]  # the slow extras go on in the background
    assert "http://127.0.0.1:8123/w/" in out.getvalue() and "password demo-secret-42" in out.getvalue()
    assert "worker thread" in out.getvalue()
    [(step, building), (args, kwargs, running)] = calls
    assert step == "build" and len(building) == 1 and running == building
    assert args == ("runserver", "127.0.0.1:8123") and kwargs == {"use_reloader": False}
    assert inprocess._running == []
