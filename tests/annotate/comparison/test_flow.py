"""The crowd simulator through the real worker endpoints, and the blind verification flow end to end."""

from __future__ import annotations

from collections import Counter

import pytest

from agreement.words import normalize_word
from annotate import services
from annotate.errors import InvalidAnswer
from annotate.models import Annotation, Assignment, Batch, Provider, Task
from annotate.selectors.comparison import batch_comparison_input, comparison_summarize
from annotate.services.verification import verification_batch_create
from annotate.simulation import SimulationError, crowd_simulate
from runs.models import Unit


def _summary(batch: Batch) -> dict:
    return comparison_summarize(data=batch_comparison_input(batch=batch), n_resamples=50)


def test_simulated_crowd_fills_every_slot_through_the_pages(batch: Batch, units: list[Unit]) -> None:
    result = crowd_simulate(batch=batch, workers=5, spammers=1, accuracy=0.9, seed=3)
    assert result.submitted == len(units) * batch.assignments_per_task
    assert set(result.stopped.values()) == {"no task left"}
    assert sum(result.per_worker.values()) == result.submitted
    assert result.per_worker["sim-spammer-01"] > 0  # workers take turns, so the spammer answers too
    answers = Annotation.objects.filter(assignment__task__batch=batch)
    assert answers.count() == result.submitted
    assert not answers.filter(words="").exists() and not answers.filter(category="").exists()
    assert set(Assignment.objects.filter(task__batch=batch).values_list("status", flat=True)) == {"submitted"}
    summary = _summary(batch)
    assert summary["units"] == len(units)
    assert list(summary["layers"]) == ["conv3", "conv4"]


def test_perfect_crowd_reproduces_the_dissection_labels(batch: Batch, units: list[Unit]) -> None:
    crowd_simulate(batch=batch, workers=3, spammers=0, accuracy=1.0)
    summary = _summary(batch)
    assert summary["category_agreement"] == 1.0
    assert summary["concept_match_rate"] == 1.0
    rows = {row["unit_key"]: row for row in summary["tables"]["units"]}
    assert (
        rows["conv3 unit 3"]["human_category"] == "region"
    )  # channel 2, sky: a Broden object, a region to people
    assert rows["conv3 unit 1"]["consensus_word"] == "red"


def test_limit_stops_after_that_many_answers(batch: Batch) -> None:
    result = crowd_simulate(batch=batch, workers=4, spammers=1, accuracy=0.8, limit=5)
    assert result.submitted == 5
    assert Annotation.objects.filter(assignment__task__batch=batch).count() == 5
    again = crowd_simulate(batch=batch, workers=4, spammers=1, accuracy=0.8, limit=2)
    assert again.submitted == 2
    assert Annotation.objects.filter(assignment__task__batch=batch).count() == 7
    assert crowd_simulate(batch=batch, workers=4, spammers=1, accuracy=0.8, limit=0).submitted == 0
    assert Annotation.objects.filter(assignment__task__batch=batch).count() == 7


def test_verification_flow_end_to_end(batch: Batch, units: list[Unit]) -> None:
    crowd_simulate(batch=batch, workers=3, spammers=0, accuracy=1.0)
    verification = verification_batch_create(batch=batch, seed=1)
    tasks = list(verification.tasks.order_by("position"))
    assert len(tasks) == 2 * len(units)
    assert {t.kind for t in tasks} == {Task.Kind.VERIFY}
    sources = {}
    for task in tasks:
        sources.setdefault(task.unit_id, []).append(task.candidate_source)
    assert all(sorted(s) == ["dissection", "human"] for s in sources.values())
    firsts = Counter(s[0] for s in sources.values())
    assert set(firsts) == {"human", "dissection"}  # shuffled: neither source always comes first
    labels = {(t.unit.channel, t.candidate_source): t.candidate_label for t in tasks}
    assert labels[(0, "dissection")] == "red" and labels[(4, "dissection")] == "kitchen"  # suffix dropped
    assert verification.state == Batch.State.DRAFT and verification.images_per_task == batch.images_per_task

    services.batch_publish(batch=verification)
    result = crowd_simulate(batch=verification, workers=3, spammers=0, accuracy=1.0, seed=2)
    assert result.submitted == 2 * len(units) * verification.assignments_per_task
    assert not Annotation.objects.filter(
        assignment__task__batch=verification, verify_answer__isnull=True
    ).exists()

    for subject in (batch, verification):
        summary = _summary(subject)
        for source in ("human", "dissection"):
            entry = summary["verification"][source]
            assert entry["units"] == len(units) and entry["share"] == 1.0 and entry["ci"][0] < 1.0
            assert summary["layers"]["conv3"]["verification"][source]["units"] == 4
        assert {row["source"] for row in summary["tables"]["verification"]} == {"human", "dissection"}
    assert _summary(verification)["units"] == len(units)


def test_verification_shares_follow_the_judgements(batch: Batch, units: list[Unit]) -> None:
    crowd_simulate(batch=batch, workers=3, spammers=0, accuracy=1.0)
    verification = verification_batch_create(batch=batch)
    services.batch_publish(batch=verification)
    crowd_simulate(batch=verification, workers=3, spammers=3, accuracy=0.7, seed=5)
    expected: dict[str, list[bool]] = {"human": [], "dissection": []}
    for task in verification.tasks.all():
        yes = list(Annotation.objects.filter(assignment__task=task).values_list("verify_answer", flat=True))
        expected[task.candidate_source].append(2 * sum(yes) > len(yes))
    summary = _summary(batch)
    for source, judged in expected.items():
        assert summary["verification"][source]["correct"] == sum(judged)
        assert summary["verification"][source]["share"] == pytest.approx(sum(judged) / len(judged))


def test_verification_needs_consensus_and_labels(batch: Batch) -> None:
    with pytest.raises(InvalidAnswer, match="no unit has both a human consensus word and a dissection label"):
        verification_batch_create(batch=batch)
    assert Batch.objects.count() == 1


def test_simulator_refuses_what_it_cannot_answer(make_batch, make_unit, units: list[Unit]) -> None:
    draft = make_batch(publish=False)
    with pytest.raises(SimulationError, match="is draft; publish it first"):
        crowd_simulate(batch=draft, workers=2, spammers=0, accuracy=1.0)
    mturk = make_batch(publish=False, provider=Provider.MTURK)
    Batch.objects.filter(pk=mturk.pk).update(state=Batch.State.PUBLISHED)
    mturk.refresh_from_db()
    with pytest.raises(SimulationError, match="MTurk"):
        crowd_simulate(batch=mturk, workers=2, spammers=0, accuracy=1.0)
    unknown = make_batch(units=[*units, make_unit(99, "conv4")])
    with pytest.raises(SimulationError, match=r"conv4 unit 100: no gold answer and no dissection label"):
        crowd_simulate(batch=unknown, workers=2, spammers=0, accuracy=1.0)
    with pytest.raises(SimulationError, match="spammers must be between 0 and workers"):
        crowd_simulate(batch=unknown, workers=2, spammers=3, accuracy=1.0)
    assert not Assignment.objects.exists()


def test_gold_units_are_answered_with_their_known_answer(make_batch, units: list[Unit]) -> None:
    gold = {units[1].pk: services.GoldAnswer("texture", ("zebra stripes",))}
    batch = make_batch(gold=gold)
    crowd_simulate(batch=batch, workers=2, spammers=0, accuracy=1.0)
    answers = Annotation.objects.filter(assignment__task__unit=units[1], assignment__task__batch=batch)
    assert {normalize_word(a.words) for a in answers} == {"zebra stripe"}
    assert set(Assignment.objects.filter(task__is_gold=True).values_list("gold_passed", flat=True)) == {True}


@pytest.mark.django_db(transaction=True)
def test_simulator_over_real_http(live_server, batch: Batch) -> None:
    result = crowd_simulate(batch=batch, workers=2, spammers=1, accuracy=0.8, limit=3, client=live_server.url)
    assert result.submitted == 3
    assert Annotation.objects.filter(assignment__task__batch=batch).count() == 3


def test_simulator_reports_an_unreachable_server(batch: Batch) -> None:
    with pytest.raises(SimulationError, match="cannot reach the server"):
        crowd_simulate(batch=batch, workers=1, spammers=0, accuracy=1.0, client="http://127.0.0.1:9")
    with pytest.raises(SimulationError, match="expected http"):
        crowd_simulate(batch=batch, workers=1, spammers=0, accuracy=1.0, client="ftp://x")


def test_in_process_crowd_under_production_settings(settings, batch: Batch) -> None:
    """HTTPS redirect on and no 'testserver' among the allowed hosts, as under `manage.py demo` in
    production.
    """
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = [".units.example.org"]
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    result = crowd_simulate(batch=batch, workers=2, spammers=0, accuracy=1.0, limit=3)
    assert result.submitted == 3
    assert Annotation.objects.filter(assignment__task__batch=batch).count() == 3
