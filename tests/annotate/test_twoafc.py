"""2AFC batches end to end: creation and its refusals, the worker's trial (accept, serve, answer once, never a
hint of which query is the strong one), catch trials as gold, the exports, `compare`, the comparison page and
the model crowd."""

from __future__ import annotations

import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from annotate import services
from annotate.errors import InvalidAnswer
from annotate.export import batch_export_rows
from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Task
from annotate.services import twoafc as twoafc_services
from annotate.services.twoafc import TwoAfcSettings, twoafc_batch_create
from annotate.simulation import twoafc_crowd_simulate
from runs.models import DissectionRun, Network, ProbeSet, Unit
from tests.factories import logged_in, run_create, shared_project, staff_user, unit_create

pytestmark = pytest.mark.django_db
PROBE_IMAGES = 160
REFERENCES = 3


def _activations(unit: Unit) -> np.ndarray:
    """A unit's made-up activation over the probe set: a seeded permutation of 0..159."""
    return np.random.default_rng(unit.channel).permutation(PROBE_IMAGES).astype(np.float64)


@pytest.fixture
def study_run(probe_set_dir: Path, monkeypatch: pytest.MonkeyPatch) -> DissectionRun:
    probe_set = ProbeSet.objects.create(
        project=shared_project(), name="probe", path=str(probe_set_dir), image_count=PROBE_IMAGES
    )
    monkeypatch.setattr(
        twoafc_services,
        "unit_activations",
        lambda *, units: {unit.pk: _activations(unit) for unit in units},
    )
    return run_create("2afc run", status=DissectionRun.Status.DONE, layers=["conv4"], probe_set=probe_set)


@pytest.fixture
def study_units(study_run: DissectionRun) -> list[Unit]:
    return [unit_create(study_run, channel, images=REFERENCES, iou=0.1 * channel) for channel in range(7)]


@pytest.fixture
def make_study(study_units: list[Unit]) -> Callable[..., Batch]:
    def make(publish: bool = True, units: list[Unit] | None = None, **fields: Any) -> Batch:
        settings = fields.pop(
            "settings", TwoAfcSettings(conditions=("natural", "none"), references=REFERENCES, catch_trials=1)
        )
        fields.setdefault("assignments_per_task", 2)
        batch = twoafc_batch_create(
            title="Which image?",
            units=study_units[:6] if units is None else units,
            settings=settings,
            **fields,
        )
        if publish:
            services.batch_publish(batch=batch)
        return batch

    return make


def _without_tokens(page: str) -> str:
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", page)


def _accept_next(client: Client, batch: Batch) -> tuple[Assignment, str]:
    """Take the next trial through the pages; the served trial page's HTML."""
    preview = client.get(f"/w/{batch.public_id}/next/")
    assert preview.status_code == 302 and "/w/task/" in preview.url
    accepted = client.post(preview.url)
    assert accepted.status_code == 302 and "/w/a/" in accepted.url, accepted.content
    page = client.get(accepted.url)
    assert page.status_code == 200
    assignment = Assignment.objects.get(public_id=accepted.url.rstrip("/").split("/")[-1])
    return assignment, page.content.decode()


@pytest.mark.parametrize(
    ("study", "message"),
    [
        (TwoAfcSettings(conditions=("natural", "pictures")), "'pictures' is not one of"),
        (TwoAfcSettings(conditions=()), "at least one condition"),
        (
            TwoAfcSettings(conditions=("natural", "featviz"), references=REFERENCES),
            "has no feature visualizations",
        ),
        (TwoAfcSettings(conditions=("natural",), references=REFERENCES + 1), "fewer than 4 top images"),
        (TwoAfcSettings(conditions=("natural",), references=REFERENCES, catch_trials=2), "only 1 other unit"),
        (
            TwoAfcSettings(conditions=("natural",), references=REFERENCES, strong_quantile=0.7),
            "Strong quantile",
        ),
    ],
)
def test_a_batch_with_impossible_settings_is_refused_and_nothing_is_written(
    make_study: Callable[..., Batch], study: TwoAfcSettings, message: str
) -> None:
    with pytest.raises(InvalidAnswer, match=message):
        make_study(settings=study)
    assert not Batch.objects.exists()


def test_mturk_is_refused(make_study: Callable[..., Batch]) -> None:
    with pytest.raises(InvalidAnswer, match="not in MTurk's frame"):
        make_study(provider="mturk")


def test_fewer_units_than_conditions_are_refused(
    make_study: Callable[..., Batch], study_units: list[Unit]
) -> None:
    settings = TwoAfcSettings(conditions=("natural", "none", "both"), references=REFERENCES)
    with pytest.raises(InvalidAnswer, match="2 unit\\(s\\) for 3 conditions"):
        make_study(units=study_units[:2], settings=settings)


def test_each_trial_holds_a_strong_and_a_weak_query_outside_its_references(
    make_study: Callable[..., Batch],
) -> None:
    batch = make_study()
    assert batch.task_type == "2afc" and batch.twoafc["conditions"] == ["natural", "none"]
    tasks = list(batch.tasks.select_related("unit"))
    assert {task.kind for task in tasks} == {Task.Kind.TWOAFC} and len(tasks) == 7
    assert [task.is_gold for task in tasks].count(True) == 1 and not tasks[0].is_gold
    for task in tasks:
        acts = _activations(task.unit)
        order = list(np.argsort(-acts, kind="stable"))
        pair = task.twoafc
        assert pair["strong"] not in order[:REFERENCES] and pair["weak"] not in order[:REFERENCES]
        assert (
            acts[pair["strong"]] == pair["strong_activation"] > pair["weak_activation"] == acts[pair["weak"]]
        )
        if task.is_gold:
            assert (pair["strong"], pair["weak"]) == (order[REFERENCES], order[-1])
        else:
            assert order.index(pair["strong"]) < 8 and order.index(pair["weak"]) >= PROBE_IMAGES - 8


def test_a_worker_answers_a_trial_once_and_the_page_never_tells_the_strong_query(
    make_study: Callable[..., Batch], start_worker: Callable[..., Client]
) -> None:
    batch = make_study()
    client = start_worker(batch, "ann")
    assignment, page = _accept_next(client, batch)
    assignment.refresh_from_db()
    assert assignment.trial["condition"] in ("natural", "none") and assignment.served_at is not None
    base = f"/w/a/{assignment.public_id}/"
    sources = set(re.findall(r'src="([^"]+)"', page))
    queries = {f"{base}q/left/", f"{base}q/right/"}
    assert queries <= sources
    assert all(src.startswith(base) for src in sources)
    pair = assignment.task.twoafc
    for secret in ("strong_side", str(pair["strong_activation"]), str(assignment.task.public_id)):
        assert secret not in page
    flipped = "left" if assignment.trial["strong_side"] == "right" else "right"
    Assignment.objects.filter(pk=assignment.pk).update(trial={**assignment.trial, "strong_side": flipped})
    assert _without_tokens(client.get(base).content.decode()) == _without_tokens(
        page
    )  # nothing tells the side
    Assignment.objects.filter(pk=assignment.pk).update(trial=assignment.trial)
    assert 'alt="The left image"' in page and 'alt="The right image"' in page
    for url in queries:
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert "Content-Disposition" not in response
    assert client.get(f"{base}q/middle/").status_code == 404
    references = {src for src in sources if "/ref/" in src}
    assert len(references) == (REFERENCES if assignment.trial["condition"] == "natural" else 0)
    assert client.get(f"/w/task/{assignment.task.public_id}/image/0/").status_code == 404
    assert Client().get(f"{base}q/left/").status_code == 404  # another browser

    served = assignment.served_at
    client.get(base)  # a reload keeps the trial and its serving time
    assignment.refresh_from_db()
    assert assignment.served_at == served

    assert client.post(base, {"choice": "left"}).status_code == 400  # no confidence: nothing stored
    response = client.post(base, {"choice": "left", "confidence": "2"})
    assert response.status_code == 302
    again = client.post(base, {"choice": "right", "confidence": "3"})
    assert again.status_code == 302  # the assignment is done: back to the next trial, nothing stored
    annotation = Annotation.objects.get(assignment=assignment)
    assignment.refresh_from_db()
    assert (annotation.choice, annotation.confidence) == ("left", 2)
    assert annotation.correct == (assignment.trial["strong_side"] == "left")
    assert assignment.submitted_at is not None
    assert annotation.reaction_ms == int((assignment.submitted_at - served).total_seconds() * 1000)
    assert client.get(f"{base}q/left/").status_code == 404  # a closed trial serves nothing more
    status = client.get(f"/w/{batch.public_id}/status/")
    assert status.status_code == 200 and "conv4" not in status.content.decode()


def test_a_replayed_submit_returns_the_stored_answer(make_study: Callable[..., Batch]) -> None:
    batch = make_study()
    worker = services.crowd_worker_create(provider="local")
    task = batch.tasks.order_by("position").first()
    assert task is not None
    assignment = twoafc_services.twoafc_trial_serve(
        assignment=services.assignment_accept(task=task, worker=worker)
    )
    first = twoafc_services.twoafc_answer_submit(assignment=assignment, choice="left", confidence=1)
    second = twoafc_services.twoafc_answer_submit(assignment=assignment, choice="right", confidence=3)
    assert second.replay and second.annotation.pk == first.annotation.pk
    assert Annotation.objects.filter(assignment=assignment).count() == 1


def test_failing_a_catch_trial_counts_as_failed_gold_and_blocks_by_the_batch_rule(
    make_study: Callable[..., Batch],
) -> None:
    batch = make_study(block_below_accuracy=0.9, block_min_gold=1, auto_reject_failed_gold=True)
    worker = services.crowd_worker_create(provider="local")
    catch = batch.tasks.get(is_gold=True)
    assignment = twoafc_services.twoafc_trial_serve(
        assignment=services.assignment_accept(task=catch, worker=worker)
    )
    assert assignment.trial["condition"] == "catch"
    wrong = "left" if assignment.trial["strong_side"] == "right" else "right"
    twoafc_services.twoafc_answer_submit(assignment=assignment, choice=wrong, confidence=3)
    worker.refresh_from_db()
    assignment.refresh_from_db()
    assert (worker.gold_total, worker.gold_correct, worker.blocked) == (1, 0, True)
    assert assignment.gold_passed is False and assignment.status == Assignment.Status.REJECTED


def test_the_model_crowd_follows_the_design_and_fills_the_exports_compare_and_the_page(
    make_study: Callable[..., Batch], django_user_model: Any, tmp_path: Path
) -> None:
    batch = make_study(assignments_per_task=3)
    result = twoafc_crowd_simulate(batch=batch, workers=3, seed=1)
    assert result.submitted == 21
    trials: dict[int, list[Assignment]] = defaultdict(list)
    for assignment in Assignment.objects.filter(task__batch=batch).select_related("task"):
        trials[assignment.worker_id].append(assignment)
    for own in trials.values():
        study = [a for a in own if not a.task.is_gold]
        assert {a.trial["condition"] for a in study} == {"natural", "none"}
        assert len({a.task.unit_id for a in own}) == len(own)  # never a unit twice
        sides = Counter(a.trial["strong_side"] for a in study)
        assert abs(sides["left"] - sides["right"]) <= 1
    assert len({a.trial["worker"] for own in trials.values() for a in own}) == 3

    rows = batch_export_rows(batch=batch)
    assert len(rows) == 21
    row = rows[0]
    assert row["task_kind"] == "2afc" and row["condition"] in ("natural", "none", "catch")
    assert row["choice"] in ("left", "right") and row["confidence"] in (1, 2, 3) and row["reaction_ms"] > 0
    assert row["correct"] == (row["choice"] == row["strong_side"]) and len(row["query_images"]) == 2

    out = io.StringIO()
    json_path = tmp_path / "summary.json"
    call_command(
        "compare",
        batch.title,
        "--resamples",
        "50",
        "--json",
        str(json_path),
        stdout=out,
        stderr=io.StringIO(),
    )
    text = out.getvalue()
    natural = sum(
        a.annotation.correct for own in trials.values() for a in own if a.trial["condition"] == "natural"
    )
    assert f"2AFC all layers natural: {natural}/9 correct" in text and "2AFC natural - none:" in text
    saved = json.loads(json_path.read_text())
    assert saved["twoafc"]["catch"]["trials"] == 3
    assert [r["condition"] for r in saved["tables"]["twoafc_conditions"]][-2:] == ["natural", "none"]

    client = logged_in(staff_user(django_user_model))
    url = reverse("annotate:batch_comparison", args=[batch.public_id])
    page = client.get(url).content.decode()
    assert 'id="twoafc"' in page and 'role="img"' in page and "Proportion correct per condition" in page
    csv = client.get(f"{url}twoafc_units.csv")
    assert csv.status_code == 200 and "predictable" in csv.content.decode().splitlines()[0]
    assert CrowdWorker.objects.filter(label__startswith="sim-2afc-").count() == 3
    for name in ("annotate:batch_detail", "annotate:batch_review"):
        assert client.get(reverse(name, args=[batch.public_id])).status_code == 200, name
    export = client.get(reverse("annotate:batch_export", args=[batch.public_id, "csv"])).content.decode()
    assert export.splitlines()[0].count("reaction_ms") == 1 and len(export.splitlines()) == 22


def test_the_demo_study_is_made_once_on_real_activations_and_partly_answered(
    probe_set_dir: Path, django_user_model: Any
) -> None:
    from annotate.demo import DEMO_RUN
    from annotate.demo_twoafc import DEMO_TWOAFC, demo_twoafc_build
    from dissection.broden import load_probe_set
    from runs.networks import network_model
    from runs.pipeline import layer_maps

    project = shared_project()
    network = Network.objects.create(project=project, name="untrained toy", architecture="toy")
    probe_set = ProbeSet.objects.create(project=project, name="probe", path=str(probe_set_dir))
    run = run_create(DEMO_RUN, status=DissectionRun.Status.DONE, network=network, probe_set=probe_set)
    for channel in range(14):
        unit_create(run, channel, "conv4", images=9, iou=0.01 * channel)
    user = staff_user(django_user_model)
    steps: list[tuple[int, int]] = []
    url = demo_twoafc_build(
        project=project, user=user, progress=lambda done, total, note: steps.append((done, total))
    )
    batch = Batch.objects.get(title=DEMO_TWOAFC)
    assert url == reverse("annotate:batch_comparison", args=[batch.public_id]) and steps[-1] == (3, 3)
    assert batch.twoafc["conditions"] == ["natural", "none"]  # no feature visualizations in this run
    answered = Assignment.objects.filter(task__batch=batch, status=Assignment.Status.SUBMITTED).count()
    assert answered == 42 < batch.tasks.count() * batch.assignments_per_task
    maps = layer_maps(network_model(network), load_probe_set(probe_set_dir), "conv4")
    for task in batch.tasks.select_related("unit")[:3]:  # the stored activations are the network's
        for row, stored in (
            (task.twoafc["strong"], task.twoafc["strong_activation"]),
            (task.twoafc["weak"], task.twoafc["weak_activation"]),
        ):
            assert maps(np.array([row]))[0, task.unit.channel].max() == pytest.approx(stored, rel=1e-5)
    assert demo_twoafc_build(project=project, user=user, progress=lambda *a: None) == url
    assert Batch.objects.filter(title=DEMO_TWOAFC).count() == 1


def test_the_batch_form_makes_a_2afc_batch_and_names_what_is_wrong(
    study_units: list[Unit], staff_client: Client
) -> None:
    data = {
        "title": "2AFC from the form",
        "task_type": "2afc",
        "run": study_units[0].run.pk,
        "layer": "conv4",
        "selection": "list",
        "unit_numbers": "1-4",
        "provider": "local",
        "assignments_per_task": 2,
        "images_per_task": 20,
        "reward": "0.05",
        "assignment_minutes": 20,
        "lifetime_hours": 24,
        "block_min_gold": 2,
        "twoafc_conditions": ["natural", "none"],
        "twoafc_references": REFERENCES,
        "twoafc_strong_percent": 5,
        "twoafc_weak_percent": 5,
        "twoafc_catch_trials": 1,
        "twoafc_seed": 7,
    }
    refused = staff_client.post("/batches/new/", {**data, "twoafc_conditions": []})
    assert refused.status_code == 400 and "Pick at least one condition" in refused.content.decode()
    refused = staff_client.post("/batches/new/", {**data, "twoafc_references": 5})
    assert refused.status_code == 400 and "fewer than 5 top images" in refused.content.decode()
    assert not Batch.objects.exists()
    response = staff_client.post("/batches/new/", data)
    assert response.status_code == 302
    batch = Batch.objects.get(title="2AFC from the form")
    assert batch.task_type == "2afc" and batch.twoafc["seed"] == 7 and batch.twoafc["strong_quantile"] == 0.05
    assert batch.tasks.count() == 5 and batch.tasks.filter(is_gold=True).count() == 1


def test_featviz_references_are_served_under_their_conditions_only(
    make_study: Callable[..., Batch], start_worker: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from annotate.selectors import twoafc as twoafc_selectors
    from tests.factories import png_bytes

    keys = [
        default_storage.save(f"featviz/test/{k}.png", ContentFile(png_bytes((0, 0, 200 + k))))
        for k in range(2)
    ]
    for module in (twoafc_services, twoafc_selectors):
        monkeypatch.setattr(module, "featviz_keys", lambda *, unit: keys)
    batch = make_study(settings=TwoAfcSettings(conditions=("featviz", "both", "none"), references=REFERENCES))
    client = start_worker(batch, "viz")
    seen = set()
    for _ in range(3):
        assignment, page = _accept_next(client, batch)
        assignment.refresh_from_db()
        condition = assignment.trial["condition"]
        seen.add(condition)
        base = f"/w/a/{assignment.public_id}/"
        assert page.count(f"{base}viz/") == (2 if condition in ("featviz", "both") else 0)
        assert page.count(f"{base}ref/") == (REFERENCES if condition == "both" else 0)
        viz = client.get(f"{base}viz/1/")
        assert viz.status_code == (200 if condition != "none" else 404)
        assert client.get(f"{base}ref/0/").status_code == (200 if condition == "both" else 404)
        assert client.post(base, {"choice": "right", "confidence": "1"}).status_code == 302
    assert seen == {"featviz", "both", "none"}
