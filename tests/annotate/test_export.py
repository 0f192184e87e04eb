"""Batch exports: the images a worker ticked carry the numbers on their tiles, every answer can be traced
(unit number and channel, probe images shown in order, IoU, automatic category) with its decisions and
bonus."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from decimal import Decimal
from html.parser import HTMLParser

from django.test import Client
from django.urls import reverse

from annotate import services
from annotate.export import EXPORT_FIELDS, batch_export_rows, csv_cell
from annotate.models import Batch, Provider
from runs.models import Unit


class _Tiles(HTMLParser):
    """Per `rejected` checkbox of the worker's form, the number a worker sees on its tile: the text (not the
    attributes, so not the alt text) of the label that holds the checkbox."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: dict[str, str] = {}
        self._label: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label":
            self._label, self._value = [], None
        elif tag == "input" and found.get("name") == "rejected" and self._label is not None:
            self._value = found["value"]

    def handle_data(self, data: str) -> None:
        if self._label is not None:
            self._label.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._label is not None:
            if self._value is not None:
                self.numbers["".join(self._label).strip()] = self._value
            self._label = None


def _rows(staff_client: Client, batch: Batch, fmt: str) -> list[dict]:
    content = staff_client.get(reverse("annotate:batch_export", args=[batch.public_id, fmt])).content.decode()
    return json.loads(content) if fmt == "json" else list(csv.DictReader(io.StringIO(content)))


def test_ticked_tile_numbers_are_the_exported_numbers(
    make_unit: Callable[..., Unit],
    make_batch: Callable[..., Batch],
    start_worker: Callable[..., Client],
    staff_client: Client,
) -> None:
    unit = make_unit(11, images=12)
    batch = make_batch(units=[unit], images_per_task=12)
    client = start_worker(batch, "alice")
    preview = client.get(reverse("annotate:batch_next", args=[batch.public_id]))
    accepted = client.post(preview.url)
    page = client.get(accepted.url).content.decode()
    tiles = _Tiles()
    tiles.feed(page)
    assert sorted(tiles.numbers, key=int) == [str(n) for n in range(1, 13)]
    ticked = [tiles.numbers["10"], tiles.numbers["12"]]
    response = client.post(accepted.url, {"words": "red", "category": "color", "rejected": ticked})
    assert response.status_code == 302

    assert _rows(staff_client, batch, "csv")[0]["images_not_fitting"] == "10 12"
    assert _rows(staff_client, batch, "json")[0]["images_not_fitting"] == [10, 12]
    unit_page = staff_client.get(reverse("annotate:unit_detail", args=[unit.pk])).content.decode()
    assert 'ticked as not fitting: 10 12"' in unit_page


def test_an_answer_is_traceable_with_its_decisions(
    make_unit: Callable[..., Unit], make_batch: Callable[..., Batch], staff_client: Client
) -> None:
    first = make_unit(50)
    unit = make_unit(97, label="roof", concept_category="part", iou=0.289, interpretable=True)
    for image in unit.images.all():
        image.source_image = f"ade20k/{'no' if image.rank == 3 else ''}{image.rank} a.jpg"
        image.save()
    batch = make_batch(units=[first, unit], images_per_task=3)
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id="alice")
    assignment = services.assignment_accept(task=batch.tasks.get(position=1), worker=worker)
    services.annotation_submit(assignment=assignment, words="roof", category="part", rejected_ranks=[2])
    services.assignment_approve(assignment=assignment)
    services.assignment_send_bonus(assignment=assignment, amount=Decimal("0.25"), reason="Thank you")

    [row] = _rows(staff_client, batch, "json")
    assignment.refresh_from_db()
    assert list(row) == list(EXPORT_FIELDS)
    assert (row["unit"], row["channel"], row["layer"], row["unit_db_id"], row["task_number"]) == (
        98,
        97,
        "conv4",
        unit.pk,
        2,
    )
    assert (row["automatic_label"], row["automatic_category"], row["iou"], row["interpretable"]) == (
        "roof",
        "part",
        0.289,
        True,
    )
    assert row["images_shown"] == 3
    assert row["shown_images"] == ["ade20k/0 a.jpg", "ade20k/1 a.jpg", "ade20k/2 a.jpg"]
    assert row["shown_tiles"] == [image.image.name for image in unit.images.order_by("rank")[:3]]
    assert row["images_not_fitting"] == [3]
    assert (row["status"], row["bonus"], row["reviewed_at"]) == (
        "approved",
        "0.25",
        assignment.reviewed_at.isoformat(),
    )
    assert [(d["action"], d.get("amount"), d.get("reason")) for d in row["decisions"]] == [
        ("approve", None, None),
        ("bonus", "0.25", "Thank you"),
    ]
    [line] = _rows(staff_client, batch, "csv")
    assert line["unit"] == "98" and line["channel"] == "97"
    assert json.loads(line["decisions"]) == row["decisions"]
    assert json.loads(line["shown_images"]) == row["shown_images"]  # paths with spaces stay whole
    assert line["images_not_fitting"] == "3"


def test_a_rejection_and_its_feedback_are_exported(
    make_unit: Callable[..., Unit], make_batch: Callable[..., Batch]
) -> None:
    batch = make_batch(units=[make_unit(22)])
    worker = services.crowd_worker_get_or_create(provider=Provider.LOCAL, external_id="bob")
    assignment = services.assignment_accept(task=batch.tasks.get(), worker=worker)
    services.annotation_submit(assignment=assignment, words="blob", category="color", rejected_ranks=[0, 1])
    services.assignment_reject(assignment=assignment, feedback="The images show circles.")
    [row] = batch_export_rows(batch=batch)
    assert (row["status"], row["feedback"], row["images_not_fitting"]) == (
        "rejected",
        "The images show circles.",
        [1, 2],
    )
    assert row["reviewed_at"] is not None and row["bonus"] == "0.00"
    [decision] = row["decisions"]
    assert (decision["action"], decision["feedback"], decision["by"]) == (
        "reject",
        "The images show circles.",
        "automatic",  # no requester named: the service was called without an actor
    )


def test_csv_cells() -> None:
    assert csv_cell([10, 12]) == "10 12"
    assert csv_cell(["a b.jpg", "c.jpg"]) == '["a b.jpg", "c.jpg"]'
    assert csv_cell([]) == ""
    assert csv_cell(None) == ""
    assert csv_cell("=SUM(A1)") == "'=SUM(A1)"
