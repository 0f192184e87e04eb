"""Requester pages: staff only, dashboard, batch creation, life cycle, review, blocking, export."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.test import Client

from annotate import services
from annotate.models import Assignment, Batch, CrowdWorker, Provider

Status = Assignment.Status


def _submitted(batch: Batch, worker_id: str, words: str = "red", position: int = 0) -> Assignment:
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=worker_id)
    assignment = services.assignment_accept(task=batch.tasks.get(position=position), worker=worker)
    services.annotation_submit(assignment=assignment, words=words, category="color", rejected_ranks=[0, 3])
    return assignment


def _staff_urls(batch: Batch) -> list[str]:
    b = batch.public_id
    return ["/", "/batches/new/", f"/batches/{b}/", f"/batches/{b}/review/", f"/batches/{b}/export.csv"]


def test_anonymous_and_non_staff_are_sent_to_login(batch: Batch, django_user_model) -> None:
    plain = Client()
    plain.force_login(django_user_model.objects.create_user("worker", password="pw-for-tests-1234"))
    for client in (Client(), plain):
        for url in _staff_urls(batch):
            response = client.get(url)
            assert response.status_code == 302 and response.url.startswith("/accounts/login/"), url
        response = client.post(f"/batches/{batch.public_id}/cancel/")
        assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    batch.refresh_from_db()
    assert batch.state == Batch.State.PUBLISHED


def test_login_page_renders(db) -> None:
    response = Client().get("/accounts/login/?next=/")
    assert response.status_code == 200 and b'name="password"' in response.content


def test_dashboard_lists_runs_and_batches_with_progress(batch: Batch, staff_client: Client) -> None:
    _submitted(batch, "alice")
    page = staff_client.get("/").content.decode()
    assert "test run" in page and batch.title in page
    assert "1 / 6" in page  # 3 tasks x 2 workers


def test_create_batch_from_a_list_with_gold(staff_client: Client, units) -> None:
    response = staff_client.post(
        "/batches/new/",
        {
            "title": "Layer 4",
            "instructions": "",
            "run": units[0].run.pk,
            "layer": "conv4",
            "selection": "list",
            "unit_numbers": "1, 3",
            "provider": "local",
            "assignments_per_task": 3,
            "images_per_task": 4,
            "reward": "0.05",
            "assignment_minutes": 20,
            "lifetime_hours": 24,
            "gold": "2; texture; stripes, striped",
            "block_below_percent": 50,
            "block_min_gold": 2,
        },
    )
    assert response.status_code == 302, response.content.decode()
    batch = Batch.objects.get(title="Layer 4")
    assert batch.state == Batch.State.DRAFT and batch.block_below_accuracy == 0.5
    assert list(batch.tasks.values_list("unit__channel", "is_gold", "gold_words")) == [
        (0, False, []),
        (2, False, []),
        (1, True, ["stripes", "striped"]),
    ]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"layer": "conv9"}, "no units in layer &#x27;conv9&#x27;"),
        ({"selection": "list", "unit_numbers": "1, 8"}, "has no unit 8"),
        ({"selection": "list", "unit_numbers": "zero"}, "is not a unit number"),
        ({"selection": "list", "unit_numbers": "0-2"}, "numbered from 1"),
        ({"selection": "sample", "sample_size": 9}, "between 1 and 3"),
        ({"gold": "1; animal; cat"}, "Gold units, line 1: category"),
        ({"gold": "0; color"}, "Gold units, line 1: expected"),
        ({"provider": "prolific"}, "completion code"),
    ],
)
def test_create_batch_errors_keep_input(staff_client: Client, units, changes, message) -> None:
    data = {
        "title": "Keep me",
        "run": units[0].run.pk,
        "layer": "conv4",
        "selection": "all",
        "provider": "local",
        "assignments_per_task": 3,
        "images_per_task": 4,
        "reward": "0.05",
        "assignment_minutes": 20,
        "lifetime_hours": 24,
        "block_min_gold": 2,
        **changes,
    }
    response = staff_client.post("/batches/new/", data)
    assert response.status_code == 400
    assert message in response.content.decode() and b'value="Keep me"' in response.content
    assert not Batch.objects.exists()


def test_random_sample_and_interpretable_selection(staff_client: Client, units) -> None:
    base = {
        "run": units[0].run.pk,
        "layer": "conv4",
        "provider": "local",
        "assignments_per_task": 1,
        "images_per_task": 4,
        "reward": "0",
        "assignment_minutes": 5,
        "lifetime_hours": 1,
        "block_min_gold": 2,
    }
    assert (
        staff_client.post(
            "/batches/new/", {**base, "title": "s", "selection": "sample", "sample_size": 2}
        ).status_code
        == 302
    )
    assert (
        staff_client.post("/batches/new/", {**base, "title": "i", "selection": "interpretable"}).status_code
        == 302
    )
    assert Batch.objects.get(title="s").tasks.count() == 2
    assert sorted(Batch.objects.get(title="i").tasks.values_list("unit__channel", flat=True)) == [0, 2]


def test_publish_pause_cancel_from_the_page(make_batch, staff_client: Client) -> None:
    batch = make_batch(publish=False)
    url = f"/batches/{batch.public_id}"
    for action, state in (
        ("publish", "published"),
        ("pause", "paused"),
        ("publish", "published"),
        ("cancel", "cancelled"),
    ):
        assert staff_client.post(f"{url}/{action}/", {"confirm": "yes"}).status_code == 302
        batch.refresh_from_db()
        assert batch.state == state
    response = staff_client.post(f"{url}/publish/", follow=True)
    assert b"cannot be published" in response.content


def test_batch_page_shows_the_worker_link(batch: Batch, staff_client: Client) -> None:
    page = staff_client.get(f"/batches/{batch.public_id}/").content.decode()
    assert f"http://testserver/w/{batch.public_id}/" in page


def test_review_shows_answers_and_approves_and_rejects_many(gold_batch: Batch, staff_client: Client) -> None:
    a = _submitted(gold_batch, "alice", words="<script>x()</script>")
    b = _submitted(gold_batch, "bob", words="red")
    page = staff_client.get(f"/batches/{gold_batch.public_id}/review/").content.decode()
    assert "&lt;script&gt;x()&lt;/script&gt;" in page and "<script>x()" not in page
    assert "concept0" in page  # automatic label
    assert '<span class="ticked-numbers">1, 4</span>' in page and "failed" in page and "passed" in page
    url = f"/batches/{gold_batch.public_id}/review/"
    missing = staff_client.post(url, {"action": "reject", "assignments": [str(a.public_id)], "feedback": ""})
    assert missing.status_code == 400 and b"Rejecting needs feedback" in missing.content
    staff_client.post(
        url,
        {
            "action": "reject",
            "assignments": [str(a.public_id)],
            "feedback": "Script, really?",
            "confirm": "yes",
        },
    )
    staff_client.post(url, {"action": "approve", "assignments": [str(b.public_id)], "feedback": ""})
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, a.feedback, b.status) == (Status.REJECTED, "Script, really?", Status.APPROVED)


def test_review_cannot_touch_another_batch(make_batch, batch: Batch, staff_client: Client, units) -> None:
    other = make_batch(title="other")
    foreign = _submitted(other, "alice")
    response = staff_client.post(
        f"/batches/{batch.public_id}/review/", {"action": "approve", "assignments": [str(foreign.public_id)]}
    )
    assert response.status_code == 400
    foreign.refresh_from_db()
    assert foreign.status == Status.SUBMITTED


def test_block_worker_from_their_page(batch: Batch, staff_client: Client) -> None:
    _submitted(batch, "alice")
    worker = CrowdWorker.objects.get(external_id="alice")
    review = staff_client.get(f"/batches/{batch.public_id}/review/").content.decode()
    assert f'href="/crowd-workers/{worker.public_id}/"' in review
    url = f"/crowd-workers/{worker.public_id}/block/"
    staff_client.post(url, {"reason": "", "confirm": "yes"})
    worker.refresh_from_db()
    assert not worker.blocked
    staff_client.post(url, {"reason": "copy-paste answers", "confirm": "yes"})
    worker.refresh_from_db()
    assert worker.blocked and worker.blocked_reason == "copy-paste answers"


def test_csrf_is_enforced_on_requester_forms(batch: Batch, django_user_model) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_user("boss", password="x-pw-1234567", is_staff=True))
    assert client.post(f"/batches/{batch.public_id}/cancel/").status_code == 403
    batch.refresh_from_db()
    assert batch.state == Batch.State.PUBLISHED


def test_export_csv_and_json_one_row_per_assignment(gold_batch: Batch, staff_client: Client) -> None:
    a = _submitted(gold_batch, "alice", words="=HYPERLINK(1)")
    _submitted(gold_batch, "bob", words="red ball", position=1)
    services.assignment_approve(assignment=a)
    services.assignment_accept(
        task=gold_batch.tasks.get(position=2),  # accepted, not answered: no row
        worker=services.crowd_worker_get_or_create(provider="local", external_id="carol"),
    )
    rows = list(
        csv.DictReader(
            io.StringIO(staff_client.get(f"/batches/{gold_batch.public_id}/export.csv").content.decode())
        )
    )
    assert [(r["worker"], r["layer"], r["unit"], r["channel"], r["status"]) for r in rows] == [
        ("alice", "conv4", "1", "0", "approved"),
        ("bob", "conv4", "2", "1", "submitted"),
    ]
    assert rows[0]["words"] == "'=HYPERLINK(1)"  # spreadsheet formulas neutralised
    assert (rows[0]["category"], rows[0]["images_not_fitting"], rows[0]["precision"]) == (
        "color",
        "1 4",
        "0.5",
    )
    assert rows[0]["unit_db_id"] == str(gold_batch.tasks.get(position=0).unit_id)
    assert (rows[0]["gold"], rows[0]["gold_passed"], rows[1]["gold_passed"]) == ("True", "False", "")
    data = json.loads(staff_client.get(f"/batches/{gold_batch.public_id}/export.json").content)
    assert [row["words"] for row in data] == ["=HYPERLINK(1)", "red ball"]
    assert data[0]["images_not_fitting"] == [1, 4] and data[0]["time_spent_ms"] >= 0
    assert staff_client.get(f"/batches/{gold_batch.public_id}/export.xml").status_code == 404


def test_admin_lists_every_model(staff_client: Client, django_user_model, batch: Batch) -> None:
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser("root", password="x-pw-1234567"))
    from django.contrib.admin import site

    ours = [model._meta for model in site._registry if model._meta.app_label in ("annotate", "runs")]
    assert {meta.model_name for meta in ours} >= {"batch", "crowdworker", "unit", "dissectionrun", "shard"}
    for meta in ours:
        assert admin.get(f"/admin/{meta.app_label}/{meta.model_name}/").status_code == 200, meta.label


def test_review_pages_through_units(make_batch, make_unit, staff_client: Client, monkeypatch) -> None:
    from annotate import selectors

    monkeypatch.setattr(selectors, "REVIEW_PAGE_SIZE", 2)
    batch = make_batch(units=[make_unit(10 + i, images=1) for i in range(3)])
    first = staff_client.get(f"/batches/{batch.public_id}/review/").content.decode()
    second = staff_client.get(f"/batches/{batch.public_id}/review/?page=2").content.decode()
    assert "conv4 unit 11 · channel 10" in first and "conv4 unit 13 · channel 12" not in first
    assert "conv4 unit 13 · channel 12" in second and "Units 3–3 of 3" in second
