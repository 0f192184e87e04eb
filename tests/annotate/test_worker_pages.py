"""Worker pages (local link and Prolific): preview, accept, answer, errors, IDOR, CSRF, XSS, hidden gold."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from annotate import services
from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Provider

Status = Assignment.Status


def _take_task(client: Client, batch: Batch) -> Assignment:
    """Follow next → preview → accept; returns the new assignment."""
    response = client.get(f"/w/{batch.public_id}/next/")
    assert response.status_code == 302 and "/w/task/" in response.url
    response = client.post(response.url)
    assert response.status_code == 302 and "/w/a/" in response.url
    return Assignment.objects.get(public_id=response.url.rstrip("/").split("/")[-1])


def test_full_local_flow(batch: Batch, start_worker, answer) -> None:
    client = start_worker(batch, "alice")
    for _ in range(3):
        assignment = _take_task(client, batch)
        page = client.get(f"/w/a/{assignment.public_id}/")
        assert page.status_code == 200
        assert page.content.count(b'type="checkbox" name="rejected"') == batch.images_per_task
        response = client.post(f"/w/a/{assignment.public_id}/", answer(rejected=[2]))
        assert response.status_code == 302 and response.url.endswith("/next/")
    finished = client.get(f"/w/{batch.public_id}/next/")
    assert finished.status_code == 200 and b"Thank you" in finished.content
    assert Annotation.objects.filter(assignment__worker__label="alice").count() == 3
    assert Annotation.objects.first().rejected_ranks == [2]


def test_start_without_id_gives_one(batch: Batch) -> None:
    client = Client()
    assert client.post(f"/w/{batch.public_id}/", {"worker_id": ""}).status_code == 302
    worker = CrowdWorker.objects.get()
    assert worker.external_id.startswith("worker-") and worker.label == ""


def test_start_rejects_bad_worker_id(batch: Batch) -> None:
    response = Client().post(f"/w/{batch.public_id}/", {"worker_id": "<bad id>"})
    assert response.status_code == 400 and b"letters, digits" in response.content
    assert b'value="&lt;bad id&gt;"' in response.content
    assert not CrowdWorker.objects.exists()


def test_preview_shows_images_with_submit_disabled(batch: Batch) -> None:
    task = batch.tasks.first()
    page = Client().get(f"/w/task/{task.public_id}/").content.decode()
    assert page.count("<img ") == batch.images_per_task
    assert 'alt="Image 1 of 4' in page
    assert "<fieldset disabled>" in page and "Submit answer</button>" in page
    assert 'type="submit" disabled' in page
    assert "Accept this task" in page


def test_reload_resumes_the_open_assignment(batch: Batch, start_worker) -> None:
    client = start_worker(batch, "alice")
    assignment = _take_task(client, batch)
    response = client.get(f"/w/{batch.public_id}/next/")
    assert response.url == f"/w/a/{assignment.public_id}/"


@pytest.mark.parametrize(
    "data,status,message",
    [
        ({"words": "", "category": "color"}, 400, "Words: write one or two words"),
        ({"words": "x" * 41, "category": "color"}, 400, "at most 40 characters"),
        ({"words": "red car", "category": "animal"}, 400, "Category: animal is not one of"),
        (
            {"words": "red car", "category": "color", "rejected": ["9"]},
            400,
            "rank 9 is not one of the images",
        ),
    ],
)
def test_bad_answer_keeps_typed_input_and_stores_nothing(batch, start_worker, data, status, message) -> None:
    client = start_worker(batch, "alice")
    assignment = _take_task(client, batch)
    data = {"rejected": ["1"], **data}
    response = client.post(f"/w/a/{assignment.public_id}/", data)
    page = response.content.decode()
    assert response.status_code == status
    assert message in page
    assert f'value="{data["words"]}"' in page
    if data["rejected"] == ["1"]:
        assert 'value="1" id="rejected-1" checked' in page
    assert not Annotation.objects.exists()


def test_expired_assignment_is_a_410_and_keeps_input(batch: Batch, start_worker, answer) -> None:
    client = start_worker(batch, "alice")
    assignment = _take_task(client, batch)
    Assignment.objects.filter(pk=assignment.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    response = client.post(f"/w/a/{assignment.public_id}/", answer(words="red ball"))
    assert response.status_code == 410
    assert b"time for this task ran out" in response.content and b'value="red ball"' in response.content
    assert not Annotation.objects.exists()
    assignment.refresh_from_db()
    assert (assignment.status, assignment.slot) == (Status.EXPIRED, None)


def test_blocked_worker_gets_403(batch: Batch, start_worker, answer) -> None:
    client = start_worker(batch, "alice")
    assignment = _take_task(client, batch)
    CrowdWorker.objects.filter(label="alice").update(blocked=True)
    response = client.post(f"/w/a/{assignment.public_id}/", answer())
    assert response.status_code == 403 and not Annotation.objects.exists()
    assert client.get(f"/w/{batch.public_id}/next/").status_code == 403


def test_closed_batch_gives_409(batch: Batch, start_worker, answer) -> None:
    client = start_worker(batch, "alice")
    assignment = _take_task(client, batch)
    Batch.objects.filter(pk=batch.pk).update(state=Batch.State.FINISHED)
    response = client.post(f"/w/a/{assignment.public_id}/", answer())
    assert response.status_code == 409 and b"finished" in response.content
    assert not Annotation.objects.exists()
    assert Client().get(f"/w/{batch.public_id}/").status_code == 409


def test_double_submit_stores_one_annotation(batch: Batch, start_worker, answer) -> None:
    client = start_worker(batch, "alice")
    assignment = _take_task(client, batch)
    first = client.post(f"/w/a/{assignment.public_id}/", answer(words="red"))
    second = client.post(f"/w/a/{assignment.public_id}/", answer(words="blue"))
    assert first.status_code == second.status_code == 302
    assert list(Annotation.objects.values_list("words", flat=True)) == ["red"]


def test_another_workers_assignment_is_404(batch: Batch, start_worker, answer) -> None:
    alice = start_worker(batch, "alice")
    assignment = _take_task(alice, batch)
    mallory = start_worker(batch, "mallory")
    assert mallory.get(f"/w/a/{assignment.public_id}/").status_code == 404
    assert mallory.post(f"/w/a/{assignment.public_id}/", answer()).status_code == 404
    assert mallory.post(f"/w/a/{assignment.public_id}/return/").status_code == 404
    assert Client().get(f"/w/a/{assignment.public_id}/").status_code == 404
    assert not Annotation.objects.exists()
    assignment.refresh_from_db()
    assert assignment.status == Status.ACCEPTED


def test_csrf_is_enforced_on_worker_forms(batch: Batch, answer) -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.post(f"/w/{batch.public_id}/", {"worker_id": "alice"}).status_code == 403
    assert not CrowdWorker.objects.exists()
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id="alice")
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    session = client.session
    session["annotate_workers"] = {str(batch.public_id): str(worker.public_id)}
    session.save()
    assert client.post(f"/w/a/{assignment.public_id}/", answer()).status_code == 403
    assert not Annotation.objects.exists()
    page = client.get(f"/w/a/{assignment.public_id}/")
    token = page.cookies["csrftoken"].value
    assert (
        client.post(f"/w/a/{assignment.public_id}/", {**answer(), "csrfmiddlewaretoken": token}).status_code
        == 302
    )


def test_instructions_are_escaped(make_batch, start_worker) -> None:
    batch = make_batch(
        instructions='<script>alert("x")</script> look <b>here</b>', title="<img src=x onerror=1>"
    )
    client = start_worker(batch, "alice")
    assignment = _take_task(client, batch)
    for url in (
        f"/w/{batch.public_id}/",
        f"/w/task/{assignment.task.public_id}/",
        f"/w/a/{assignment.public_id}/",
    ):
        page = client.get(url).content.decode()
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_gold_answers_never_reach_a_worker(gold_batch: Batch, start_worker, answer) -> None:
    gold_task = gold_batch.tasks.get(is_gold=True)
    gold_task.gold_words = ["zanzibarite"]
    gold_task.save()
    client = start_worker(gold_batch, "alice")
    pages = [client.get(f"/w/{gold_batch.public_id}/", follow=True)]
    for _ in range(gold_batch.tasks.count()):
        assignment = _take_task(client, gold_batch)
        pages.append(client.get(f"/w/task/{assignment.task.public_id}/"))
        pages.append(client.get(f"/w/a/{assignment.public_id}/"))
        pages.append(client.post(f"/w/a/{assignment.public_id}/", answer(words="", category="")))
        pages.append(client.post(f"/w/a/{assignment.public_id}/", answer(), follow=True))
    for page in pages:
        text = page.content.decode().lower()
        assert "zanzibarite" not in text and "gold" not in text


def test_worker_can_return_a_task(batch: Batch, start_worker) -> None:
    client = start_worker(batch, "alice")
    assignment = _take_task(client, batch)
    response = client.post(f"/w/a/{assignment.public_id}/return/")
    assert response.status_code == 302
    assignment.refresh_from_db()
    assert (assignment.status, assignment.slot) == (Status.RETURNED, None)


def test_taking_a_full_task_says_so(batch: Batch, start_worker) -> None:
    task = batch.tasks.first()
    for name in ("a", "b"):
        services.assignment_accept(
            task=task, worker=services.crowd_worker_get_or_create(provider="local", external_id=name)
        )
    client = start_worker(batch, "carol")
    response = client.post(f"/w/task/{task.public_id}/")
    assert response.status_code == 409 and b"All places on this task are taken" in response.content


def test_prolific_flow_reads_ids_and_redirects_with_completion_code(make_batch, answer, settings) -> None:
    batch = make_batch(provider=Provider.PROLIFIC, prolific_completion_code="C0DE42")
    client = Client()
    missing = client.get(f"/w/{batch.public_id}/?PROLIFIC_PID=abc")
    assert missing.status_code == 400 and b"STUDY_ID, SESSION_ID" in missing.content
    response = client.get(f"/w/{batch.public_id}/?PROLIFIC_PID=pid1&STUDY_ID=study1&SESSION_ID=sess1")
    assert response.status_code == 302
    for _ in range(batch.tasks.count()):
        assignment = _take_task(client, batch)
        assert (assignment.prolific_study_id, assignment.prolific_session_id) == ("study1", "sess1")
        assert assignment.worker.provider == Provider.PROLIFIC and assignment.worker.external_id == "pid1"
        client.post(f"/w/a/{assignment.public_id}/", answer())
    done = client.get(f"/w/{batch.public_id}/next/")
    assert done.status_code == 302
    assert done.url == "https://app.prolific.com/submissions/complete?cc=C0DE42"


def test_mturk_batches_are_not_served_on_the_local_link(make_batch) -> None:
    batch = make_batch(provider=Provider.MTURK, publish=False)
    assert Client().get(f"/w/{batch.public_id}/").status_code == 404
    assert Client().get(f"/w/task/{batch.tasks.first().public_id}/").status_code == 404


def test_paused_batch_tells_a_new_worker_so(batch: Batch, start_worker) -> None:
    client = start_worker(batch, "alice")
    services.batch_pause(batch=batch)
    response = client.get(f"/w/{batch.public_id}/next/")
    assert response.status_code == 409 and b"paused" in response.content


def test_start_page_says_reward_time_and_number_of_tasks(batch: Batch, start_worker, answer) -> None:
    page = Client().get(f"/w/{batch.public_id}/").content.decode()
    assert "0.10 USD per approved task" in page and "up to 10 minutes per task" in page
    assert "3 tasks;" in page and "most people take" not in page
    for name in ("a", "b", "c"):
        worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=name)
        assignment = services.assignment_accept(
            task=batch.tasks.get(position=0 if name != "c" else 1), worker=worker
        )
        services.annotation_submit(assignment=assignment, words="red", category="color")
    Annotation.objects.update(time_spent_ms=90_000)
    assert "most people take about 2 minutes" in Client().get(f"/w/{batch.public_id}/").content.decode()


def test_after_submitting_the_page_says_saved_and_which_task_of_how_many(
    batch: Batch, start_worker, answer
) -> None:
    client = start_worker(batch, "alice")
    for number in (1, 2):
        assignment = _take_task(client, batch)
        page = client.post(f"/w/a/{assignment.public_id}/", answer(), follow=True).content.decode()
        assert f"Saved — task {number} of 3." in page


def _status_page(client: Client, batch: Batch) -> str:
    response = client.get(f"/w/{batch.public_id}/status/")
    assert response.status_code == 200
    return response.content.decode()


def test_status_page_shows_decisions_feedback_and_bonus_and_never_a_label_or_gold(
    gold_batch: Batch, start_worker, answer
) -> None:
    gold_task = gold_batch.tasks.get(is_gold=True)
    gold_task.gold_words = ["zanzibarite"]
    gold_task.save()
    client = start_worker(gold_batch, "alice")
    words = {}
    for _ in range(gold_batch.tasks.count()):
        assignment = _take_task(client, gold_batch)
        words[assignment.task.position] = f"answer{assignment.task.position}"
        client.post(
            f"/w/a/{assignment.public_id}/", answer(words=words[assignment.task.position], rejected=[1, 3])
        )
    mine = {a.task.position: a for a in Assignment.objects.filter(worker__label="alice")}
    assert mine[0].gold_passed is False  # the gold unit, answered "answer0"
    services.assignment_approve(assignment=mine[1])
    services.assignment_send_bonus(assignment=mine[1], amount=Decimal("0.25"), reason="Careful work")
    services.assignment_reject(assignment=mine[2], feedback="The images show <stripes>.")
    page = _status_page(client, gold_batch)
    for word in words.values():
        assert f"<dd>{word}</dd>" in page
    assert "<dd>2, 4</dd>" in page  # the ticked images, numbered as on the tiles
    assert "Approved" in page and "Rejected" in page and "Waiting for review" in page
    assert "The images show &lt;stripes&gt;." in page
    assert "<dd>0.25 USD</dd>" in page and "Earned so far: <strong>0.35 USD</strong>" in page
    assert page.count("A check item was answered wrongly.") == 1
    lowered = page.lower()
    assert "zanzibarite" not in lowered and "gold" not in lowered and "concept" not in lowered
    assert "red circle" not in lowered  # the gold unit's accepted words
    for unit in {a.task.unit for a in mine.values()}:
        assert unit.label not in page


def test_status_page_is_the_workers_own_and_linked_from_their_pages(
    batch: Batch, start_worker, answer
) -> None:
    assert Client().get(f"/w/{batch.public_id}/status/").status_code == 403
    alice = start_worker(batch, "alice")
    for _ in range(batch.tasks.count()):
        assignment = _take_task(alice, batch)
        task_page = alice.get(f"/w/a/{assignment.public_id}/").content.decode()
        assert f'href="/w/{batch.public_id}/status/"' in task_page
        alice.post(f"/w/a/{assignment.public_id}/", answer(words="alices-word"))
    finished = alice.get(f"/w/{batch.public_id}/next/").content.decode()
    assert "Thank you" in finished and f'href="/w/{batch.public_id}/status/"' in finished
    assert "3 answers" in _status_page(alice, batch)
    bob = start_worker(batch, "bob")
    page = _status_page(bob, batch)
    assert "alices-word" not in page and "0 answers" in page


def test_prolific_worker_reaches_the_status_page_from_the_task(make_batch, answer) -> None:
    batch = make_batch(provider=Provider.PROLIFIC, prolific_completion_code="C0DE42")
    client = Client()
    client.get(f"/w/{batch.public_id}/?PROLIFIC_PID=pid1&STUDY_ID=study1&SESSION_ID=sess1")
    assignment = _take_task(client, batch)
    assert (
        f'href="/w/{batch.public_id}/status/"' in client.get(f"/w/a/{assignment.public_id}/").content.decode()
    )
    client.post(f"/w/a/{assignment.public_id}/", answer(words="pid-word"))
    assert "<dd>pid-word</dd>" in _status_page(client, batch)
    mturk = make_batch(provider=Provider.MTURK, publish=False)
    assert Client().get(f"/w/{mturk.public_id}/status/").status_code == 404
