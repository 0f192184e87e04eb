"""Broden's suffixes ("red-c", "kitchen-s") are the data's tags: the pages show the concept without them
(batch, review, comparison tables, unit page), the downloads keep the stored label."""

from __future__ import annotations

import csv
import io
import re

from django.test import Client
from django.urls import reverse

from annotate import services
from annotate.models import Batch
from runs.models import Unit


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_pages_drop_broden_suffixes_and_downloads_keep_them(
    staff_client: Client, batch: Batch, units: list[Unit]
) -> None:
    for task in batch.tasks.all():
        for worker in ("ann", "bob"):
            crowd_worker = services.crowd_worker_get_or_create(provider="local", external_id=worker)
            assignment = services.assignment_accept(task=task, worker=crowd_worker)
            services.annotation_submit(assignment=assignment, words="red", category="color")
    red, kitchen = units[0], units[4]
    assert (red.label, kitchen.label) == ("red-c", "kitchen-s")
    pages = {
        "batch": reverse("annotate:batch_detail", args=[batch.public_id]),
        "review": reverse("annotate:batch_review", args=[batch.public_id]),
        "comparison": reverse("annotate:batch_comparison", args=[batch.public_id]),
        "unit": reverse("annotate:unit_detail", args=[kitchen.pk]),
    }
    for name, url in pages.items():
        response = staff_client.get(url)
        assert response.status_code == 200, name
        text = _text(response.content.decode())
        assert "red-c" not in text and "kitchen-s" not in text, name
    review = _text(staff_client.get(pages["review"]).content.decode())
    assert "Automatic label: red (color)" in review and "Automatic label: kitchen (scene)" in review
    comparison = staff_client.get(pages["comparison"]).content.decode()
    units_table = re.search(r'<section class="card" id="table-units".*?</section>', comparison, re.S)
    assert units_table and "<td>kitchen</td>" in units_table.group(0)
    rows = csv.DictReader(io.StringIO(staff_client.get(f"{pages['comparison']}units.csv").content.decode()))
    assert {row["auto_label"] for row in rows} >= {"red-c", "kitchen-s"}
    assert "Label kitchen (scene)" in _text(staff_client.get(pages["unit"]).content.decode())
