"""The comparison page's guardrails: the minimum of answers per unit, the counts behind every figure,
notes on degenerate statistics, definitions, human-readable headers (downloads keep machine names)."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable

from django.test import Client
from django.urls import reverse

from agreement.glossary import DEFINITIONS
from agreement.records import UnitRecord
from agreement.summary import summarize
from annotate import services
from annotate.models import Batch, Task
from annotate.selectors import comparison as selectors
from annotate.services.comparison import batch_min_answers_set
from runs.models import Unit


def _answer(task: Task, worker: str, words: str, category: str) -> None:
    crowd_worker = services.crowd_worker_get_or_create(provider="local", external_id=worker)
    assignment = services.assignment_accept(task=task, worker=crowd_worker)
    services.annotation_submit(assignment=assignment, words=words, category=category)


def _page(client: Client, batch: Batch) -> str:
    response = client.get(reverse("annotate:batch_comparison", args=[batch.public_id]))
    assert response.status_code == 200
    return response.content.decode()


def _card(page: str, name: str) -> str:
    match = re.search(rf'<li id="stat-{name}">(.*?)</li>', page, re.S)
    assert match, name
    return match.group(1)


def test_a_unit_with_one_answer_is_counted_apart(
    staff_client: Client, batch: Batch, units: list[Unit]
) -> None:
    tasks = list(batch.tasks.order_by("position"))
    for task in tasks[:6]:
        _answer(task, "ann", task.unit.label.removesuffix("-c").removesuffix("-s"), "object")
        _answer(task, "bob", task.unit.label.removesuffix("-c").removesuffix("-s"), "part")
    _answer(tasks[6], "cat", "plank", "texture")  # one answer: apart; tasks[7]: none
    page = _page(staff_client, batch)
    lone = tasks[6].unit
    assert "6 of 8 units</strong> have at least 2 answers (12 answers)" in page
    link = reverse("annotate:unit_detail", args=[lone.pk])
    assert (
        f'1 unit with fewer answers is counted apart: <a href="{link}">conv4 unit {lone.channel + 1}</a> (1)'
        in page
    )
    assert "1 unit has no answer yet" in page
    summary = selectors.comparison_cached(batch=batch, aggregation="dawid_skene").summary
    rows = {row["unit_key"]: row for row in summary["tables"]["units"]}
    lone_row = rows[f"conv4 unit {lone.channel + 1}"]
    assert lone_row["counted"] is False and lone_row["human_category"] is None
    # the statistics are those of the six units with two answers, as if the lone answer did not exist
    data = selectors.batch_comparison_input(batch=batch)
    without = [
        UnitRecord(
            record.unit_key, record.layer, record.auto_label, record.auto_category, record.iou, (), record.url
        )
        if len(record.answers) == 1
        else record
        for record in data.records
    ]
    reference = summarize(without, synonyms=data.synonyms, n_resamples=selectors.N_RESAMPLES)
    for name in (
        "fleiss_kappa",
        "category_agreement",
        "cohen_kappa",
        "concept_match_rate",
        "confusion_matrix",
    ):
        assert summary[name] == reference[name], name
    assert "cat" not in {row["worker"] for row in summary["tables"]["workers"]}
    # every card says what it rests on
    assert "6 units · 12 answers" in _card(page, "fleiss_kappa")
    both = summary["support"]["cohen_kappa"]
    assert f"{both['units']} units · {both['answers']} answers" in _card(page, "cohen_kappa")
    for name in ("fleiss_kappa", "krippendorff_alpha", "cohen_kappa", "word_agreement"):
        assert html.escape(DEFINITIONS[name]) in _card(page, name)
    assert html.escape(DEFINITIONS["dawid_skene"]) in page and html.escape(DEFINITIONS["min_answers"]) in page


def test_kappa_zero_beside_high_agreement_is_explained(
    staff_client: Client, make_unit: Callable[..., Unit], make_batch: Callable[..., Batch]
) -> None:
    roofs = [make_unit(20 + i, "conv4", label="roof", concept_category="part", iou=0.1) for i in range(7)]
    batch = make_batch(units=roofs)
    for number, task in enumerate(batch.tasks.order_by("position")):
        category = "part" if number < 6 else "object"
        _answer(task, "ann", "roof", category)
        _answer(task, "bob", "roof", category)
    card = _card(_page(staff_client, batch), "cohen_kappa")
    assert '<span class="value">0.000</span>' in card
    assert "Network Dissection puts all 7 units in one category (Object part), so κ is 0" in card
    assert "rests on" not in card


def test_one_worker_and_too_few_units_are_explained(staff_client: Client, batch: Batch) -> None:
    batch_min_answers_set(batch=batch, min_answers=1)
    for task in batch.tasks.order_by("position")[:3]:
        _answer(task, "solo", "red", "color")
    page = _page(staff_client, batch)
    card = _card(page, "fleiss_kappa")
    assert "n/a" in card and "only one worker answered: agreement among workers needs at least two" in card
    assert "rests on 3 units only (fewer than 5)" in _card(page, "category_agreement")
    assert "one worker answered the counted units: Dawid–Skene can only repeat" in page


def test_nothing_counted_yet_says_so(staff_client: Client, batch: Batch) -> None:
    _answer(batch.tasks.order_by("position").first(), "ann", "red", "color")
    page = _page(staff_client, batch)
    assert "0 of 8 units</strong>" in page
    assert "no unit has the minimum of 2 answers yet (1 with fewer are counted apart)" in _card(
        page, "cohen_kappa"
    )


def test_headers_are_words_on_the_page_and_machine_names_in_the_downloads(
    staff_client: Client, batch: Batch
) -> None:
    tasks = list(batch.tasks.order_by("position"))
    for task in tasks:
        for worker in ("ann", "bob"):
            _answer(task, worker, "dog", "object")
    page = _page(staff_client, batch)
    units = re.search(r'<section class="card" id="table-units".*?</section>', page, re.S).group(0)
    for key, title in (("unit_key", "Unit"), ("ds_posterior", "Dawid–Skene probability"), ("iou", "IoU")):
        assert f'<th scope="col" title="{key}">{title}</th>' in units
    layers = re.search(r'<section class="card" id="table-layers".*?</section>', page, re.S).group(0)
    assert '<th scope="col" title="cohen_kappa_ci_low">Cohen&#x27;s κ: interval low</th>' in layers
    assert '<th scope="col" title="fleiss_kappa_units">Fleiss&#x27; κ: units</th>' in layers
    base = reverse("annotate:batch_comparison", args=[batch.public_id])
    header = next(csv.reader(io.StringIO(staff_client.get(f"{base}units.csv").content.decode())))
    assert header[:4] == ["unit_key", "layer", "answers", "counted"]
    first = tasks[0].unit
    assert (
        f'<a href="{reverse("annotate:unit_detail", args=[first.pk])}">conv3 unit {first.channel + 1}</a>'
        in units
    )


def test_long_tables_are_paged_on_the_page_and_whole_in_the_downloads(
    staff_client: Client, make_unit: Callable[..., Unit], make_batch: Callable[..., Batch], monkeypatch
) -> None:
    from annotate.views import comparison as views

    monkeypatch.setattr(views, "TABLE_ROWS", 3)
    batch = make_batch(
        units=[make_unit(40 + i, "conv4", label="dog", concept_category="object") for i in range(7)]
    )
    url = reverse("annotate:batch_comparison", args=[batch.public_id])
    first = staff_client.get(url).content.decode()
    assert "Rows 1–3 of 7" in first and "units-page=2#table-units" in first
    third = staff_client.get(url, {"units-page": "3"}).content.decode()
    assert "Rows 7–7 of 7" in third and "conv4 unit 47" in third
    assert len(list(csv.DictReader(io.StringIO(staff_client.get(f"{url}units.csv").content.decode())))) == 7


def test_the_setting_is_staff_only(client: Client, django_user_model, batch: Batch) -> None:
    url = reverse("annotate:batch_comparison_settings", args=[batch.public_id])
    plain = django_user_model.objects.create_user("someone", password="pw-for-tests-1234")
    client.force_login(plain)
    response = client.post(url, {"min_answers": "5"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    batch.refresh_from_db()
    assert batch.min_answers == 2
