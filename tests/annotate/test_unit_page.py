"""The unit page: one numbering with tally.csv, what it shows (answers with their ticked images, consensus,
verification, CAM, batches), and who may see it."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable

import pytest
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from annotate import services
from annotate.models import Assignment, Batch, Provider, Task
from runs import services as runs
from runs.models import DissectionRun, Project, Unit
from tests.factories import logged_in, shared_project, staff_user
from tests.runs.conftest import drain


def _url(unit: Unit) -> str:
    return reverse("annotate:unit_detail", args=[unit.pk])


def _answer(batch: Batch, worker_id: str, position: int, **answer: object) -> Assignment:
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=worker_id)
    assignment = services.assignment_accept(task=batch.tasks.get(position=position), worker=worker)
    services.annotation_submit(assignment=assignment, **answer)  # type: ignore[arg-type]
    return assignment


def _text(html: str) -> str:
    """The page's visible text, whitespace collapsed (tags and attributes dropped)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
def dissected(db: None, toy_weights, probe_set_dir) -> DissectionRun:
    """A real dissection of the toy network's conv4 on the synthetic probe set, run in this process."""
    project = shared_project()
    with toy_weights.open("rb") as handle:
        network = runs.network_register(
            project=project,
            name="toy",
            architecture="toy",
            weights=File(handle, name="toy.pt"),
            inspect_now=True,
        )
    probe_set = runs.probe_set_register(
        project=project, name="synthetic", path=str(probe_set_dir), inspect_now=True
    )
    run = runs.run_launch(
        project=project,
        name="toy run",
        network=network,
        probe_set=probe_set,
        layers=["conv4"],
        shard_size=160,
        topk=4,
    )
    run = drain(run)
    assert run.status == DissectionRun.Status.DONE, run.error
    return run


@pytest.mark.slow
def test_the_unit_number_on_the_page_is_tally_csv_s(dissected: DissectionRun, staff_client: Client) -> None:
    prefix = dissected.report["conv4"].rsplit("/", 1)[0]
    with default_storage.open(f"{prefix}/tally.csv", "rb") as handle:
        tally = list(csv.DictReader(io.StringIO(handle.read().decode())))
    report = staff_client.get(reverse("runs:media", args=[dissected.report["conv4"]])).getvalue().decode()
    checked = 0
    for unit in Unit.objects.filter(run=dissected).exclude(label="").order_by("-iou")[:3]:
        html = staff_client.get(_url(unit)).content.decode()
        shown = int(re.search(r"<h1>Unit (\d+) ", html).group(1))  # type: ignore[union-attr]
        row = next(row for row in tally if int(row["unit"]) == shown)
        assert (row["label"], float(row["score"])) == (unit.label, pytest.approx(unit.iou, abs=1e-6))
        assert f"channel {unit.channel}" in _text(html) and shown == unit.channel + 1
        link = f"/runs/{dissected.pk}/layers/conv4/units/{shown}/"
        assert f'<a href="{link}">unit {shown}</a>' in report, "the report links the unit by its number"
        response = staff_client.get(link)
        assert response.status_code == 302 and response["Location"] == _url(unit)
        checked += 1
    assert checked == 3
    assert staff_client.get(f"/runs/{dissected.pk}/layers/conv4/units/999/").status_code == 404


def test_shows_images_concepts_answers_and_consensus(
    make_unit: Callable[..., Unit], make_batch: Callable[..., Batch], staff_client: Client
) -> None:
    unit = make_unit(
        7,
        label="roof-s",
        concept_category="part",
        iou=0.289,
        interpretable=True,
        threshold=1.25,
        top_concepts=[
            {"label": "roof-s", "category": "part", "iou": 0.289},
            {"label": "sky", "category": "object", "iou": 0.31},
        ],
    )
    unit.images.filter(rank=0).update(source_image="ade20k/a.jpg")
    batch = make_batch(units=[unit], assignments_per_task=3)
    _answer(batch, "alice", 0, words="roof", category="part", rejected_ranks=[1, 3])
    rejected = _answer(batch, "bob", 0, words="blue", category="color", rejected_ranks=[3])
    services.assignment_reject(assignment=rejected, feedback="Not a colour.")
    _answer(batch, "carol", 0, words="roofs", category="part", rejected_ranks=[])

    response = staff_client.get(_url(unit))
    assert response.status_code == 200
    html = response.content.decode()
    text = _text(html)
    assert "Unit 8 · channel 7 · layer conv4" in text
    assert "ade20k/a.jpg" in text and "1.2500" in text
    assert "sky object 0.310 roof part 0.289" in text  # every concept's IoU, best first
    assert "roof-s" not in text  # Broden's scene suffix is the data's tag, not for readers
    assert "Label roof (part)" in text
    for number in (1, 2, 3, 4):
        assert f'id="image-{number}"' in html
    # alice ticked images 2 and 4; bob 4 (his answer is rejected: listed, not counted).
    assert 'ticked as not fitting: 2 4"' in html and 'ticked as not fitting: 4"' in html
    assert 'ticked as not fitting: none"' in html  # carol
    assert "ticked as not fitting by 2 of 3 answers" in text  # image 4
    assert "no: rejected" in text and "Not a colour." in text
    assert "Consensus word roof" in text  # roof and roofs are one word after normalisation
    assert "Human category Object part" in text
    assert reverse("annotate:batch_comparison", args=[batch.public_id]) in html
    assert reverse("annotate:batch_review", args=[batch.public_id]) + "?page=1#task-" in html
    majority = staff_client.get(_url(unit) + "?aggregation=majority").content.decode()
    assert "(the majority vote)" in _text(majority)
    assert staff_client.get(_url(unit) + "?aggregation=mode").status_code == 404


def test_shows_verification_verdicts_and_cam_contributions(
    make_unit: Callable[..., Unit], make_batch: Callable[..., Batch], staff_client: Client
) -> None:
    unit = make_unit(3, label="dog", concept_category="object", iou=0.2)
    batch = make_batch(units=[unit])
    verify = Task.objects.create(
        batch=batch,
        unit=unit,
        kind=Task.Kind.VERIFY,
        candidate_label="puppy",
        candidate_source="human",
        position=9,
    )
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id="vera")
    services.annotation_submit(
        assignment=services.assignment_accept(task=verify, worker=worker), verify_answer=True
    )
    overlay = default_storage.save(f"runs/{unit.run_id}/cam/000.png", ContentFile(b"png"))
    gallery = [
        {
            "image": "ade20k/b.jpg",
            "overlay": overlay,
            "prediction": "kennel",
            "probability": 0.75,
            "layer": "conv4",
            "units": [
                {"unit": 1, "channel": 0, "contribution": 2.0, "label": "", "interpretable": False},
                {"unit": 4, "channel": 3, "contribution": 1.5, "label": "dog", "interpretable": True},
            ],
        }
    ]
    key = default_storage.save(
        f"runs/{unit.run_id}/cam/gallery.json", ContentFile(json.dumps(gallery).encode())
    )
    unit.run.report = {"cam": key}
    unit.run.save()

    text = _text(staff_client.get(_url(unit)).content.decode())
    assert "vera" in text and "puppy Human yes" in text
    assert "ade20k/b.jpg kennel 0.75 1.500 2" in text
    assert "verify a label, task 2" in text.lower()


def test_no_cam_gallery_and_no_batch_say_so(make_unit: Callable[..., Unit], staff_client: Client) -> None:
    text = _text(staff_client.get(_url(make_unit(0))).content.decode())
    assert "This run has no CAM gallery" in text
    assert "No batch of your projects holds this unit" in text
    assert "No crowd worker has answered" in text


def test_only_the_project_s_requesters_see_a_unit(
    make_unit: Callable[..., Unit],
    batch: Batch,
    start_worker: Callable[..., Client],
    staff_client: Client,
    django_user_model,
) -> None:
    unit = batch.tasks.first().unit
    url = _url(unit)
    assert staff_client.get(url).status_code == 200
    plain = Client()
    plain.force_login(django_user_model.objects.create_user("plain", password="pw-for-tests-1234"))
    crowd_worker = start_worker(batch, "mallory")  # holds a worker session from the personal link
    for client in (Client(), plain, crowd_worker):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), client
    other = logged_in(staff_user(django_user_model, "other", project=Project.objects.create(name="Other")))
    assert other.get(url).status_code == 404
    assert staff_client.get(reverse("annotate:unit_detail", args=[unit.pk + 1000])).status_code == 404
    assert staff_client.post(url).status_code == 405


def test_a_unit_below_the_minimum_of_answers_says_it_is_not_counted(
    make_unit: Callable[..., Unit], make_batch: Callable[..., Batch], staff_client: Client
) -> None:
    unit = make_unit(4, label="red-c", concept_category="color", iou=0.1)
    batch = make_batch(units=[unit], min_answers=2)
    _answer(batch, "alice", 0, words="red", category="color", rejected_ranks=[])
    text = _text(staff_client.get(_url(unit)).content.decode())
    assert "Answers counted 1 — fewer than the minimum of 2" in text
