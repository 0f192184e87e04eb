"""The verification task in the worker pages: one labelled yes/no question, usable by keyboard, and the
candidate's source (human or dissection) never in anything a worker receives."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse

from annotate import services
from annotate.models import Annotation, Batch, Provider, Task
from annotate.providers.mturk import client as mturk
from annotate.services.verification import verification_batch_create
from annotate.simulation import crowd_simulate
from runs.models import Unit

QUESTION = "Does this label describe most of these images?"


@pytest.fixture
def verification(batch: Batch) -> Batch:
    crowd_simulate(batch=batch, workers=3, spammers=0, accuracy=1.0)
    made = verification_batch_create(batch=batch)
    services.batch_publish(batch=made)
    return made


def _no_source(html: str) -> None:
    lowered = html.lower()
    assert "dissection" not in lowered and "human" not in lowered and "candidate_source" not in lowered


def _worker(batch: Batch, name: str = "vera") -> Client:
    """A browser that started on the batch link as a new worker labelled `name` (via its personal link)."""
    client = Client()
    started = client.post(reverse("annotate:batch_start", args=[batch.public_id]), {"worker_id": name})
    assert started.status_code == 302 and client.get(started.url).status_code == 302
    return client


def test_verify_task_pages(verification: Batch) -> None:
    client = Client()
    start = client.get(reverse("annotate:batch_start", args=[verification.public_id])).content.decode()
    assert "say whether the label shown describes most of the images" in start
    _no_source(start)
    client = _worker(verification)
    pages = []
    response = client.get(reverse("annotate:batch_next", args=[verification.public_id]), follow=True)
    pages.append(response)
    task = Task.objects.get(public_id=response.resolver_match.kwargs["task_id"])
    html = response.content.decode()
    assert QUESTION in html and task.candidate_label in html and "one yes/no question" in html
    assert 'name="words"' not in html and 'name="category"' not in html
    response = client.post(reverse("annotate:task_preview", args=[task.public_id]), follow=True)
    pages.append(response)
    html = response.content.decode()
    assert re.search(r"<legend>Does this label describe most of these images\?</legend>", html)
    for value, text in (("yes", "Yes"), ("no", "No")):
        match = re.search(
            rf'<label for="([^"]+)"><input type="radio" name="answer" value="{value}" '
            rf'id="([^"]+)" required> {text}</label>',
            html,
        )
        assert match and match.group(1) == match.group(2)
    assert html.count('<img src="') == verification.images_per_task
    work = response.redirect_chain[-1][0]
    refused = client.post(work, {})
    pages.append(refused)
    assert refused.status_code == 400
    assert "Answer: say whether the label describes most of the images." in refused.content.decode()
    assert not Annotation.objects.filter(assignment__task__batch=verification).exists()
    done = client.post(work, {"answer": "no"}, follow=True)
    pages.append(done)
    stored = Annotation.objects.get(assignment__task=task)
    assert stored.verify_answer is False and stored.words == "" and stored.category == ""
    for page in pages:
        _no_source(page.content.decode())
        _no_source(" ".join(f"{k}: {v}" for k, v in page.items()))


def test_every_verify_task_hides_its_source(verification: Batch) -> None:
    client = _worker(verification, "sceptic")
    seen = 0
    while True:
        response = client.get(reverse("annotate:batch_next", args=[verification.public_id]), follow=True)
        html = response.content.decode()
        _no_source(html)
        if "task_id" not in (response.resolver_match.kwargs if response.resolver_match else {}):
            break
        accepted = client.post(response.request["PATH_INFO"], follow=True)
        _no_source(accepted.content.decode())
        done = client.post(accepted.redirect_chain[-1][0], {"answer": "yes"}, follow=True)
        _no_source(done.content.decode())
        seen += 1
    assert seen == verification.tasks.count()
    assert set(
        Annotation.objects.filter(assignment__worker__label="sceptic").values_list("verify_answer", flat=True)
    ) == {True}


def test_label_task_pages_still_ask_three_questions(batch: Batch) -> None:
    client = _worker(batch)
    response = client.get(reverse("annotate:batch_next", args=[batch.public_id]), follow=True)
    response = client.post(response.request["PATH_INFO"], follow=True)
    html = response.content.decode()
    assert 'name="words"' in html and 'name="category"' in html and QUESTION not in html


def test_verify_task_in_mturk_frame(make_batch, units: list[Unit], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mturk.MTurkProvider, "remote_assignment", lambda self, assignment: None)
    source = make_batch()
    crowd_simulate(batch=source, workers=2, spammers=0, accuracy=1.0)
    source.provider = Provider.MTURK
    source.save(update_fields=["provider"])
    made = verification_batch_create(batch=source)
    Batch.objects.filter(pk=made.pk).update(state=Batch.State.PUBLISHED)
    task = made.tasks.order_by("position").first()
    Task.objects.filter(pk=task.pk).update(mturk_hit_id="H1")
    client = Client()
    url = reverse("annotate:mturk_task", args=[task.public_id])
    preview = client.get(f"{url}?assignmentId={mturk.PREVIEW_ASSIGNMENT_ID}").content.decode()
    assert QUESTION in preview
    _no_source(preview)
    params = {"assignmentId": "A1", "workerId": "W1", "hitId": "H1", "turkSubmitTo": mturk.SUBMIT_HOSTS[1]}
    page = client.get(f"{url}?{urlencode(params)}").content.decode()
    _no_source(page)
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    response = client.post(
        reverse("annotate:mturk_submit", args=[task.public_id]), {"token": token, "answer": "yes"}
    )
    assert response.status_code == 200 and "externalSubmit" in response.content.decode()
    assert Annotation.objects.get(assignment__task=task).verify_answer is True
