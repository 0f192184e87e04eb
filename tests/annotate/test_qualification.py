"""Qualifications: a worker takes a short gold test before a batch that requires it; failing keeps them out
(kindly, revealing no gold answer), passing lets them in and holds for the next batch requiring it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from annotate import services
from annotate.errors import QualificationRequired
from annotate.models import Batch, Provider, Qualification, QualificationResult
from annotate.services.qualifications import (
    batch_qualifications_set,
    qualification_answer_submit,
    qualification_create,
)
from runs import services as runs_services
from runs.models import AuditEvent, DissectionRun, Project, Unit
from tests.factories import logged_in, run_create, shared_project, staff_user, unit_create

Status = QualificationResult.Status
GOLD_WORDS = ("scarlet", "crimson")


@pytest.fixture
def qualification(units: list[Unit]) -> Qualification:
    """Two gold units; pass with both right (100% over 2 items). The accepted words are unusual so a page
    that leaks them is caught."""
    return qualification_create(
        project=shared_project(),
        name="Colour screen",
        gold={
            units[0].pk: services.GoldAnswer("color", GOLD_WORDS),
            units[1].pk: services.GoldAnswer("object", ("teapot",)),
        },
        min_accuracy=1.0,
        min_items=2,
        images_per_item=4,
    )


@pytest.fixture
def screened(make_batch: Callable[..., Batch], qualification: Qualification) -> Callable[[], Batch]:
    def make() -> Batch:
        batch = make_batch()
        batch_qualifications_set(batch=batch, qualifications=[qualification])
        return batch

    return make


def _take_test(client: Client, batch: Batch, answers: list[dict[str, Any]]) -> None:
    for data in answers:
        page = client.get(f"/w/{batch.public_id}/test/")
        assert page.status_code == 200
        assert client.post(f"/w/{batch.public_id}/test/", data).status_code == 302


RIGHT = [
    {"words": "scarlet", "category": "color", "rejected": []},
    {"words": "teapot", "category": "object", "rejected": ["1"]},
]
WRONG = [
    {"words": "blue", "category": "color", "rejected": []},
    {"words": "teapot", "category": "object", "rejected": []},
]


def test_worker_is_sent_to_the_test_and_shown_no_gold(
    screened: Callable[[], Batch], start_worker: Callable[..., Client]
) -> None:
    batch = screened()
    client = start_worker(batch, "ann")
    response = client.get(f"/w/{batch.public_id}/next/")
    assert response.status_code == 302 and response.url == f"/w/{batch.public_id}/test/"
    page = client.get(response.url).content.decode()
    assert "short test" in page
    for secret in (*GOLD_WORDS, "teapot", "concept0", "concept1"):
        assert secret not in page
    image = page.split('src="', 1)[1].split('"', 1)[0]
    assert image.startswith("/w/test-item/")
    assert client.get(image).status_code == 200
    task = batch.tasks.first()
    assert task is not None
    taken = client.post(f"/w/task/{task.public_id}/")
    assert taken.status_code == 403
    assert "short test" in taken.content.decode()


def test_failing_keeps_the_worker_out_kindly(
    screened: Callable[[], Batch], start_worker: Callable[..., Client]
) -> None:
    batch = screened()
    client = start_worker(batch, "bob")
    _take_test(client, batch, WRONG)
    result = QualificationResult.objects.get()
    assert (result.status, result.items, result.correct, result.accuracy) == (Status.FAILED, 2, 1, 0.5)
    refused = client.get(f"/w/{batch.public_id}/next/")
    assert refused.status_code == 403
    text = refused.content.decode()
    assert "did not reach the accuracy" in text
    for secret in (*GOLD_WORDS, "teapot"):
        assert secret not in text
    task = batch.tasks.first()
    assert task is not None
    taken = client.post(f"/w/task/{task.public_id}/")
    assert taken.status_code == 403 and not task.assignments.exists()
    # Taking the test again does not reopen it.
    assert client.get(f"/w/{batch.public_id}/test/").status_code == 403


def test_passing_lets_the_worker_in_and_holds_for_the_next_batch(
    screened: Callable[[], Batch], start_worker: Callable[..., Client], answer: Callable[..., dict[str, Any]]
) -> None:
    first = screened()
    client = start_worker(first, "cat")
    _take_test(client, first, RIGHT)
    result = QualificationResult.objects.get()
    assert (result.status, result.accuracy) == (Status.PASSED, 1.0)
    preview = client.get(f"/w/{first.public_id}/next/")
    assert preview.status_code == 302 and "/w/task/" in preview.url
    taken = client.post(preview.url)
    assert taken.status_code == 302 and "/w/a/" in taken.url
    assert client.post(taken.url, answer()).status_code == 302

    second = screened()
    start_worker(second, "cat", client)
    nxt = client.get(f"/w/{second.public_id}/next/")
    assert nxt.status_code == 302 and "/w/task/" in nxt.url, "the passed test is not asked again"
    assert client.post(nxt.url).status_code == 302
    assert QualificationResult.objects.count() == 1


def test_decisions_survive_a_second_batch_for_prolific_participants(
    make_batch: Callable[..., Batch], qualification: Qualification
) -> None:
    batches = [make_batch(provider=Provider.PROLIFIC, prolific_completion_code="C0DE") for _ in range(2)]
    for batch in batches:
        batch_qualifications_set(batch=batch, qualifications=[qualification])
    worker = services.crowd_worker_get_or_create(provider=Provider.PROLIFIC, external_id="p-1")
    items = list(qualification.items.order_by("position"))
    qualification_answer_submit(
        qualification=qualification, worker=worker, item=items[0], words="red", category="color"
    )
    outcome = qualification_answer_submit(
        qualification=qualification, worker=worker, item=items[1], words="pot", category="object"
    )
    assert outcome.status == Status.FAILED
    for batch in batches:
        task = batch.tasks.first()
        assert task is not None
        with pytest.raises(QualificationRequired, match="did not reach"):
            services.assignment_accept(task=task, worker=worker)
    same = services.crowd_worker_get_or_create(provider=Provider.PROLIFIC, external_id="p-1")
    assert same.pk == worker.pk


def test_a_worker_without_the_test_cannot_take_a_slot(screened: Callable[[], Batch], worker: Any) -> None:
    batch = screened()
    task = batch.tasks.first()
    assert task is not None
    with pytest.raises(QualificationRequired, match="short test"):
        services.assignment_accept(task=task, worker=worker)


def test_grading_and_changes_are_audited(
    qualification: Qualification, screened: Callable[[], Batch], worker: Any
) -> None:
    screened()
    actions = list(AuditEvent.objects.values_list("details__change", flat=True))
    assert actions.count("create") == 1 and actions.count("require") == 1
    for item, data in zip(qualification.items.order_by("position"), RIGHT, strict=True):
        qualification_answer_submit(
            qualification=qualification,
            worker=worker,
            item=item,
            words=data["words"],
            category=data["category"],
        )
    grades = AuditEvent.objects.filter(details__change="grade")
    assert [g.details["status"] for g in grades] == ["passed"]


def test_bad_qualifications_are_refused(units: list[Unit], make_batch: Callable[..., Batch]) -> None:
    from annotate.errors import InvalidAnswer, ReviewError

    gold = {units[0].pk: services.GoldAnswer("color", ("red",))}
    with pytest.raises(InvalidAnswer, match="Minimum items"):
        qualification_create(project=shared_project(), name="q", gold=gold, min_accuracy=0.5, min_items=2)
    other = Project.objects.create(name="Elsewhere")
    with pytest.raises(InvalidAnswer, match="not a unit of project Elsewhere"):
        qualification_create(project=other, name="q", gold=gold, min_accuracy=0.5, min_items=1)
    assert not Qualification.objects.exists()
    q = qualification_create(project=shared_project(), name="q", gold=gold, min_accuracy=0.5, min_items=1)
    mturk = make_batch(publish=False, provider=Provider.MTURK)
    mturk.mturk_hit_type_id = "TYPE1"  # on MTurk already: its HIT type's requirements are fixed
    with pytest.raises(ReviewError, match="MTurk"):
        batch_qualifications_set(batch=mturk, qualifications=[q])
    assert not mturk.qualifications.exists()


def test_requester_creates_requires_and_sees_statuses(
    django_user_model: Any,
    run: Any,
    units: list[Unit],
    screened: Callable[[], Batch],
    start_worker: Callable[..., Client],
) -> None:
    boss = logged_in(staff_user(django_user_model))
    response = boss.post(
        "/qualifications/new/",
        {
            "name": "Objects",
            "run": run.pk,
            "layer": "conv4",
            "gold": "1; object; teapot\n3; color; red",
            "min_accuracy_percent": 50,
            "min_items": 2,
            "images_per_item": 4,
        },
    )
    assert response.status_code == 302, response.content
    created = Qualification.objects.get(name="Objects")
    assert sorted(created.items.values_list("unit__channel", flat=True)) == [0, 2]
    bad = boss.post(
        "/qualifications/new/",
        {
            "name": "Bad",
            "run": run.pk,
            "layer": "conv4",
            "gold": "9; object; x",
            "min_accuracy_percent": 50,
            "min_items": 1,
            "images_per_item": 4,
        },
    )
    assert bad.status_code == 400 and "has no unit 9" in bad.content.decode()
    assert not Qualification.objects.filter(name="Bad").exists()

    form = boss.post(
        "/batches/new/",
        {
            "title": "Screened",
            "run": run.pk,
            "layer": "conv4",
            "selection": "all",
            "provider": "local",
            "assignments_per_task": 1,
            "images_per_task": 4,
            "reward": "0.10",
            "assignment_minutes": 10,
            "lifetime_hours": 24,
            "block_min_gold": 2,
            "qualifications": [created.pk],
        },
    )
    assert form.status_code == 302, form.content
    assert list(Batch.objects.get(title="Screened").qualifications.all()) == [created]

    batch = screened()
    _take_test(start_worker(batch, "pat"), batch, WRONG)
    _take_test(start_worker(batch, "sam"), batch, RIGHT)
    start_worker(batch, "lee").get(f"/w/{batch.public_id}/test/")
    QualificationResult.objects.get_or_create(
        qualification=batch.qualifications.get(), worker=services.crowd_worker_create(provider=Provider.LOCAL)
    )
    page = boss.get(f"/batches/{batch.public_id}/").content.decode()
    for status in ("Passed", "Failed", "Pending"):
        assert f'class="qualification-{status.lower()}">{status}<' in page
    listing = boss.get("/qualifications/").content.decode()
    assert "Colour screen" in listing and "Objects" in listing


def test_another_project_sees_nothing(
    django_user_model: Any, qualification: Qualification, screened: Callable[[], Batch]
) -> None:
    outsider_project = Project.objects.create(name="Other lab")
    outsider = logged_in(staff_user(django_user_model, "outsider", project=outsider_project))
    assert outsider.get(f"/qualifications/{qualification.public_id}/").status_code == 404
    assert "Colour screen" not in outsider.get("/qualifications/").content.decode()
    other_run = run_create("other run", project=outsider_project, layers=["conv4"])
    unit = unit_create(other_run, 0)
    form = outsider.post(
        "/batches/new/",
        {
            "title": "Theirs",
            "run": other_run.pk,
            "layer": "conv4",
            "selection": "all",
            "provider": "local",
            "assignments_per_task": 1,
            "images_per_task": 4,
            "reward": "0.10",
            "assignment_minutes": 10,
            "lifetime_hours": 24,
            "block_min_gold": 2,
            "qualifications": [qualification.pk],
        },
    )
    assert form.status_code == 400 and not Batch.objects.filter(title="Theirs").exists()
    assert unit.pk
    assert Client().get(f"/qualifications/{qualification.public_id}/").status_code == 302


def _bearer(user: Any) -> Client:
    return Client(
        headers={"Authorization": f"Bearer {runs_services.api_token_create(user=user, name='t')[1]}"}
    )


def _api_batch(run: DissectionRun, **fields: Any) -> dict[str, Any]:
    return {
        "title": "Screened by API",
        "run": run.pk,
        "layer": "conv4",
        "assignments_per_task": 2,
        "images_per_task": 4,
        "reward": "0.05",
        **fields,
    }


def test_a_batch_made_through_the_api_requires_its_qualification(
    django_user_model: Any,
    run: DissectionRun,
    qualification: Qualification,
    start_worker: Callable[..., Client],
) -> None:
    boss = staff_user(django_user_model)
    api = _bearer(boss)
    made = api.post(
        "/api/batches",
        _api_batch(run, qualifications=[str(qualification.public_id)]),
        content_type="application/json",
    )
    assert made.status_code == 201, made.content
    assert made.json()["qualifications"] == [str(qualification.public_id)]
    batch = Batch.objects.get(title="Screened by API")
    assert list(batch.qualifications.all()) == [qualification]
    (required,) = AuditEvent.objects.filter(batch_key=batch.public_id, action="qualification")
    assert (required.actor, required.details["after"]) == (boss, ["Colour screen"])
    assert api.post(f"/api/batches/{batch.public_id}/publish").json()["state"] == "published"

    failed = start_worker(batch, "pat")
    _take_test(failed, batch, WRONG)
    task = batch.tasks.first()
    assert task is not None
    assert failed.post(f"/w/task/{task.public_id}/").status_code == 403 and not task.assignments.exists()
    passed = start_worker(batch, "sam")
    _take_test(passed, batch, RIGHT)
    nxt = passed.get(f"/w/{batch.public_id}/next/")
    assert nxt.status_code == 302 and "/w/task/" in nxt.url
    assert passed.post(nxt.url).status_code == 302 and task.assignments.count() == 1

    (listed,) = api.get("/api/qualifications").json()["items"]
    assert (listed["id"], listed["passed"], listed["failed"], listed["pending"], listed["item_count"]) == (
        str(qualification.public_id),
        1,
        1,
        0,
        2,
    )
    path = f"/api/qualifications/{qualification.public_id}/results"
    results = api.get(path).json()
    assert results["count"] == 2
    assert {(r["worker"]["label"], r["status"], r["correct"]) for r in results["items"]} == {
        ("pat", "failed", 1),
        ("sam", "passed", 2),
    }
    assert [r["worker"]["label"] for r in api.get(f"{path}?status=failed").json()["items"]] == ["pat"]
    bad = api.get(f"{path}?status=done")
    assert bad.status_code == 400 and bad.json()["detail"].startswith("Status: 'done' is not one of pending")


def test_the_api_refuses_a_qualification_the_requester_may_not_require(
    django_user_model: Any, run: DissectionRun, qualification: Qualification
) -> None:
    boss = _bearer(staff_user(django_user_model))
    mturk = boss.post(
        "/api/batches",
        _api_batch(run, provider="mturk", qualifications=[str(qualification.public_id)]),
        content_type="application/json",
    )
    assert mturk.status_code == 201, mturk.content  # on MTurk: the test of a QualificationType
    assert mturk.json()["qualifications"] == [str(qualification.public_id)]
    outsider_project = Project.objects.create(name="Other lab")
    outsider = _bearer(staff_user(django_user_model, "outsider", project=outsider_project))
    theirs = run_create(
        "other run", project=outsider_project, status=DissectionRun.Status.DONE, layers=["conv4"]
    )
    unit_create(theirs, 0)
    stolen = outsider.post(
        "/api/batches",
        _api_batch(theirs, qualifications=[str(qualification.public_id)]),
        content_type="application/json",
    )
    assert stolen.status_code == 404 and stolen.json() == {"detail": "No such qualification."}
    assert outsider.get("/api/qualifications").json() == {"items": [], "count": 0}
    hidden = outsider.get(f"/api/qualifications/{qualification.public_id}/results")
    assert hidden.status_code == 404 and hidden.json() == {"detail": "No such qualification."}
    assert Client().get("/api/qualifications").status_code == 401
    assert list(Batch.objects.values_list("provider", flat=True)) == [Provider.MTURK]
    assert AuditEvent.objects.filter(details__change="require").count() == 1


def test_the_form_takes_a_prolific_participant_group(
    django_user_model: Any, run: Any, units: list[Unit]
) -> None:
    boss = logged_in(staff_user(django_user_model))
    fields = {
        "name": "Screen",
        "run": run.pk,
        "layer": "conv4",
        "gold": "1; color; red",
        "min_accuracy_percent": 100,
        "min_items": 1,
        "images_per_item": 4,
    }
    bad = boss.post("/qualifications/new/", {**fields, "prolific_group_id": "a group; drop"})
    assert bad.status_code == 400
    assert (
        "Prolific participant group id: &#x27;a group; drop&#x27; is not a Prolific id"
        in bad.content.decode()
    )
    assert not Qualification.objects.exists()
    made = boss.post("/qualifications/new/", {**fields, "prolific_group_id": " 64f0c1a2b3 "})
    assert made.status_code == 302
    qualification = Qualification.objects.get()
    assert qualification.prolific_group_id == "64f0c1a2b3"
    assert AuditEvent.objects.get(details__change="create").details["prolific_group_id"] == "64f0c1a2b3"
    assert "<code>64f0c1a2b3</code>" in boss.get(made.url).content.decode()
