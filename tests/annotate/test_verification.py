"""Verification batches: units and tasks said apart, the label each task asks about, and one verification
batch per source (a second is refused with a message naming the first)."""

from __future__ import annotations

import pytest
from django.test import Client

from annotate import services
from annotate.errors import DuplicateVerification
from annotate.models import Batch, Provider, Task
from annotate.services.verification import verification_batch_create
from runs.models import Unit

# per task position: the word both workers answer
WORDS = ["apple", "banana", "cherry"]


@pytest.fixture
def answered(batch: Batch) -> Batch:
    """Two workers answer every task of `batch` with WORDS; the units' automatic labels are concept0..2,
    Broden objects."""
    Unit.objects.filter(tasks__batch=batch).update(concept_category="object")
    for name in ("alice", "bob"):
        worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id=name)
        for task in batch.tasks.order_by("position"):
            assignment = services.assignment_accept(task=task, worker=worker)
            services.annotation_submit(assignment=assignment, words=WORDS[task.position], category="object")
    return batch


def test_verification_page_says_units_and_tasks_apart_and_the_label_each_task_asks_about(
    answered: Batch, staff_client: Client
) -> None:
    response = staff_client.post(f"/batches/{answered.public_id}/verification/new/", follow=True)
    page = response.content.decode()
    verification = Batch.objects.get(verifies=answered)
    assert "Draft verification batch created: 3 units, 6 tasks (two per unit)." in page
    assert '<span id="batch-size">3 units, 6 tasks</span>' in page
    asked = {(t.unit.label, t.candidate_source): t.candidate_label for t in verification.tasks.all()}
    assert {label for (_, source), label in asked.items() if source == Task.CandidateSource.HUMAN} == set(
        WORDS
    )
    for task in verification.tasks.all():
        assert (
            f"<td><strong>{task.candidate_label}</strong></td><td>{task.get_candidate_source_display()}</td>"
            in page
        )
    assert "Blind verification of" in page and answered.title in page
    source_page = staff_client.get(f"/batches/{answered.public_id}/").content.decode()
    assert f'href="/batches/{verification.public_id}/"' in source_page
    assert '<span id="batch-size">3 units, 3 tasks</span>' in source_page


def test_a_second_verification_batch_is_refused_until_the_first_is_cancelled(answered: Batch) -> None:
    first = verification_batch_create(batch=answered)
    assert first.verifies == answered
    with pytest.raises(DuplicateVerification, match="already has a verification batch") as refused:
        verification_batch_create(batch=answered, title="Again")
    assert refused.value.existing == first
    assert Batch.objects.filter(verifies=answered).count() == 1
    assert not Batch.objects.filter(title="Again").exists()
    services.batch_cancel(batch=first)
    second = verification_batch_create(batch=answered, title="Again")
    assert second.verifies == answered and second.tasks.count() == 6


def test_the_page_refuses_a_duplicate_and_opens_the_existing_one(
    answered: Batch, staff_client: Client
) -> None:
    url = f"/batches/{answered.public_id}/verification/new/"
    assert staff_client.post(url).status_code == 302
    first = Batch.objects.get(verifies=answered)
    again = staff_client.post(url)
    assert again.status_code == 302 and again.url == f"/batches/{first.public_id}/"
    page = staff_client.get(again.url).content.decode()
    assert "Nothing was created" in page and "already has a verification batch" in page
    assert Batch.objects.filter(verifies=answered).count() == 1
    assert Task.objects.filter(kind=Task.Kind.VERIFY).count() == 6
