"""The comparison dashboard and its downloads: rendering with zero, one and many answers, staff only,
every table as CSV and JSON equal to the summary."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from annotate import services
from annotate.models import Batch, CrowdWorker
from annotate.selectors.comparison import batch_comparison_input, comparison_summarize
from annotate.services.verification import verification_batch_create
from annotate.simulation import crowd_simulate
from runs.models import DissectionRun, Unit
from tests.annotate.comparison.conftest import ComparisonWorker

BASE_TABLES = ("layers", "category_shares", "confusion", "disagreements", "workers", "units")


def _dashboard(client: Client, batch: Batch, **params: str) -> str:
    response = client.get(reverse("annotate:batch_comparison", args=[batch.public_id]), params)
    assert response.status_code == 200
    return response.content.decode()


def _assert_page(html: str, *, verification: bool = False) -> None:
    for name in BASE_TABLES + (("verification",) if verification else ()):
        assert f'id="table-{name}"' in html
        assert f"comparison/{name}.csv" in html and f"comparison/{name}.json" in html
    for plot in ("confusion", "agreement", "scatter") + (("verification",) if verification else ()):
        figure = re.search(rf'<figure id="plot-{plot}">(.*?)</figure>', html, re.S)
        assert figure and figure.group(1).lstrip().startswith("<svg") and 'role="img"' in figure.group(1)
    assert ('id="plot-verification"' in html) == verification
    assert "summary.json" in html


def test_dashboard_with_no_answers(staff_client: Client, batch: Batch) -> None:
    html = _dashboard(staff_client, batch)
    _assert_page(html)
    assert "All layers · 8 units" in html
    assert "No unit has both a human" in html  # the empty heatmap says so


def test_dashboard_with_one_answer(staff_client: Client, batch: Batch) -> None:
    crowd_simulate(batch=batch, workers=1, spammers=0, accuracy=1.0, limit=1)
    _assert_page(_dashboard(staff_client, batch))
    _assert_page(_dashboard(staff_client, batch, aggregation="majority"))


def test_dashboard_with_many_answers_and_verification(
    staff_client: Client, batch: Batch, comparison_worker: ComparisonWorker
) -> None:
    crowd_simulate(batch=batch, workers=6, spammers=2, accuracy=0.7, seed=4)
    html = _dashboard(staff_client, batch)
    _assert_page(html)
    assert "Create blind verification tasks" in html
    summary = comparison_summarize(data=batch_comparison_input(batch=batch))
    assert summary["tables"]["disagreements"], "a noisy crowd disagrees with some dissection label"
    for name in (
        "fleiss_kappa",
        "krippendorff_alpha",
        "category_agreement",
        "cohen_kappa",
        "concept_match_rate",
    ):
        stat = re.search(rf'<li id="stat-{name}">(.*?)</li>', html, re.S).group(1)
        assert f'<span class="value">{summary[name]:.3f}</span>' in stat
        assert f"CI {summary['ci'][name][0]:.3f} – {summary['ci'][name][1]:.3f}" in stat
    units = {f"{unit.layer} unit {unit.channel + 1}": unit for unit in Unit.objects.all()}
    for row in summary["tables"]["disagreements"]:
        unit = units[row["unit_key"]]  # "conv4 unit 6" is channel 5
        assert row["url"] == reverse("annotate:unit_detail", args=[unit.pk])
        assert f'<a href="{row["url"]}">{row["unit_key"]}</a>' in html
    unit_page = staff_client.get(summary["tables"]["disagreements"][0]["url"])
    assert unit_page.status_code == 200

    response = staff_client.post(reverse("annotate:batch_verification_create", args=[batch.public_id]))
    verification = Batch.objects.exclude(pk=batch.pk).get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "annotate:batch_detail", args=[verification.public_id]
    )
    services.batch_publish(batch=verification)
    crowd_simulate(batch=verification, workers=3, spammers=0, accuracy=0.9)
    assert 'id="stale"' in _dashboard(staff_client, batch), "the stored figures predate the verdicts"
    assert comparison_worker.run() == 1, "the verdicts queued the batch's figures once"
    _assert_page(_dashboard(staff_client, batch), verification=True)
    html = _dashboard(staff_client, verification)
    _assert_page(html, verification=True)
    assert "Create blind verification tasks" not in html


def test_verification_button_explains_when_nothing_to_verify(staff_client: Client, batch: Batch) -> None:
    response = staff_client.post(
        reverse("annotate:batch_verification_create", args=[batch.public_id]), follow=True
    )
    assert "no unit has both a human consensus word and a dissection label yet" in response.content.decode()
    assert Batch.objects.count() == 1


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


@pytest.mark.parametrize("with_verification", [False, True])
def test_downloads_match_the_summary(staff_client: Client, batch: Batch, with_verification: bool) -> None:
    crowd_simulate(batch=batch, workers=4, spammers=1, accuracy=0.8, seed=1)
    if with_verification:
        verification = verification_batch_create(batch=batch)
        services.batch_publish(batch=verification)
        crowd_simulate(batch=verification, workers=3, spammers=1, accuracy=0.8)
    summary = comparison_summarize(data=batch_comparison_input(batch=batch))
    assert ("verification" in summary["tables"]) == with_verification
    base = reverse("annotate:batch_comparison", args=[batch.public_id])
    whole = staff_client.get(f"{base}summary.json")
    assert whole.status_code == 200 and whole["Content-Type"] == "application/json"
    assert json.loads(whole.content) == summary
    for name, rows in summary["tables"].items():
        as_json = staff_client.get(f"{base}{name}.json")
        assert as_json.status_code == 200
        assert json.loads(as_json.content) == rows
        as_csv = staff_client.get(f"{base}{name}.csv")
        assert as_csv.status_code == 200 and as_csv["Content-Type"].startswith("text/csv")
        assert f'-{name}.csv"' in as_csv["Content-Disposition"]
        parsed = list(csv.DictReader(io.StringIO(as_csv.content.decode())))
        assert len(parsed) == len(rows)
        for row, got in zip(rows, parsed, strict=True):
            assert got == {key: _cell(value) for key, value in row.items()}


def test_majority_download_differs_only_by_aggregation(staff_client: Client, batch: Batch) -> None:
    crowd_simulate(batch=batch, workers=4, spammers=1, accuracy=0.8, seed=1)
    base = reverse("annotate:batch_comparison", args=[batch.public_id])
    summary = json.loads(staff_client.get(f"{base}summary.json", {"aggregation": "majority"}).content)
    assert summary["settings"]["aggregation"] == "majority"
    assert summary == comparison_summarize(data=batch_comparison_input(batch=batch), aggregation="majority")
    assert staff_client.get(base, {"aggregation": "mode"}).status_code == 404


def test_unknown_tables_and_formats_are_404(staff_client: Client, batch: Batch) -> None:
    base = reverse("annotate:batch_comparison", args=[batch.public_id])
    for tail in ("summary.csv", "nothing.csv", "units.xlsx", "verification.json"):
        assert staff_client.get(base + tail).status_code == 404, tail


def test_run_dashboard(staff_client: Client, batch: Batch, run: DissectionRun, units: list[Unit]) -> None:
    crowd_simulate(batch=batch, workers=3, spammers=1, accuracy=0.8)
    url = reverse("annotate:run_comparison", args=[run.pk])
    html = staff_client.get(url).content.decode()
    _assert_page(html)
    assert "Create blind verification tasks" not in html
    summary = comparison_summarize(data=batch_comparison_input(batch=batch))
    assert json.loads(staff_client.get(f"{url}summary.json").content)["units"] == summary["units"]
    assert json.loads(staff_client.get(f"{url}units.json").content) == summary["tables"]["units"]
    assert url in staff_client.get(reverse("annotate:dashboard")).content.decode()


def test_links_from_batch_pages(staff_client: Client, batch: Batch) -> None:
    url = reverse("annotate:batch_comparison", args=[batch.public_id])
    assert url in staff_client.get(reverse("annotate:batch_detail", args=[batch.public_id])).content.decode()
    assert url in staff_client.get(reverse("annotate:dashboard")).content.decode()


def test_staff_only(client: Client, django_user_model: Any, batch: Batch, run: DissectionRun) -> None:
    urls = [
        reverse("annotate:batch_comparison", args=[batch.public_id]),
        reverse("annotate:batch_comparison_export", args=[batch.public_id, "units", "csv"]),
        reverse("annotate:batch_comparison_export", args=[batch.public_id, "summary", "json"]),
        reverse("annotate:run_comparison", args=[run.pk]),
        reverse("annotate:run_comparison_export", args=[run.pk, "layers", "json"]),
    ]
    plain = django_user_model.objects.create_user("worker", password="pw-for-tests-1234")
    for who in (None, plain):
        if who is not None:
            client.force_login(who)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
        response = client.post(reverse("annotate:batch_verification_create", args=[batch.public_id]))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert Batch.objects.count() == 1


def test_unmappable_dissection_category_is_named(staff_client: Client, make_batch, make_unit) -> None:
    odd = make_unit(50, "conv4", label="blob", concept_category="stuff", iou=0.3)
    batch = make_batch(units=[odd])
    html = _dashboard(staff_client, batch)
    assert (
        "conv4 unit 51 (channel 50) of run &#x27;compare run&#x27;: category &#x27;stuff&#x27; is not a "
        "Broden category" in html
    )
    assert (
        comparison_summarize(data=batch_comparison_input(batch=batch))["tables"]["units"][0]["auto_label"]
        is None
    )


def test_csv_cells_never_start_a_formula(staff_client: Client, batch: Batch) -> None:
    Batch.objects.filter(pk=batch.pk).update(min_answers=1)  # one answer: count it, so its worker is listed
    worker = Client()
    started = worker.post(reverse("annotate:batch_start", args=[batch.public_id]), {"worker_id": "@SUM"})
    worker.get(started.url)  # the personal link logs the browser in
    CrowdWorker.objects.filter(label="@SUM").update(external_id="@SUM")  # as a provider's id might read
    preview = worker.get(reverse("annotate:batch_next", args=[batch.public_id]), follow=True)
    accepted = worker.post(preview.request["PATH_INFO"], follow=True)
    done = worker.post(accepted.redirect_chain[-1][0], {"words": "red", "category": "color"})
    assert done.status_code == 302
    base = reverse("annotate:batch_comparison", args=[batch.public_id])
    rows = list(csv.DictReader(io.StringIO(staff_client.get(f"{base}workers.csv").content.decode())))
    assert [row["worker"] for row in rows] == ["'@SUM"]
    assert json.loads(staff_client.get(f"{base}workers.json").content)[0]["worker"] == "@SUM"
    export = staff_client.get(reverse("annotate:batch_export", args=[batch.public_id, "csv"]))
    exported = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert [(row["worker"], row["worker_label"]) for row in exported] == [("'@SUM", "'@SUM")]
