"""The run page at scale: layer tabs, the per-layer summary, sort, filter and pages of units with lazy
thumbnails; one step total from the launch message to the progress line; an ETA that never says 0 while work
remains; cancelling only once confirmed; the CAM gallery's captions; Broden suffixes kept out of the page."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from typing import Any

import pytest
from django.core.files import File
from django.core.files.base import ContentFile
from django.template import Context, Template
from django.test import Client

from runs import selectors
from runs import services as runs
from runs.models import DissectionRun, Network, ProbeSet, Readiness, Unit, UnitImage
from runs.storage import store_bytes
from tests.factories import run_create, shared_project, unit_create

pytestmark = pytest.mark.django_db

IMG = re.compile(r"<img\b[^>]*>")


def _units_table(html: str) -> str:
    """The page's units table (the summary and gallery above it hold no thumbnails of units)."""
    start = html.index('id="units"')
    return html[start : html.index("</section>", start)]


def _bulk_units(run: DissectionRun, layer: str, count: int, images: int = 4) -> list[Unit]:
    """`count` labelled units with `images` image rows each (names only: the page links them, never reads)."""
    categories = ["object", "part", "color", "scene"]
    units = Unit.objects.bulk_create(
        [
            Unit(
                run=run,
                layer=layer,
                channel=channel,
                label=f"concept{channel % 37}" + ("-c" if channel % 4 == 2 else ""),
                concept_category=categories[channel % 4],
                iou=(channel * 7919 % 1000) / 1000,
                interpretable=(channel * 7919 % 1000) / 1000 > 0.04,
            )
            for channel in range(count)
        ]
    )
    UnitImage.objects.bulk_create(
        [
            UnitImage(unit=unit, rank=rank, image=f"units/{run.pk}/{layer}/{unit.channel}-{rank}.png")
            for unit in units
            for rank in range(images)
        ]
    )
    return units


def _done_run(name: str = "big run", layers: tuple[str, ...] = ("conv4",)) -> DissectionRun:
    return run_create(name, status=DissectionRun.Status.DONE, progress=1.0, layers=list(layers))


def test_a_run_of_1000_units_shows_one_page_of_lazy_thumbnails(
    staff_client: Client, django_assert_max_num_queries: Any
) -> None:
    run = _done_run()
    _bulk_units(run, "conv4", 1000, images=12)
    with django_assert_max_num_queries(25):
        html = staff_client.get(f"/runs/{run.pk}/").content.decode()
    table = _units_table(html)
    images = IMG.findall(table)
    assert len(images) == selectors.UNITS_PER_PAGE * selectors.THUMBNAILS_PER_UNIT
    for tag in images:
        assert 'loading="lazy"' in tag and 'width="64"' in tag and 'height="64"' in tag, tag
    assert "Units 1–50 of 1000" in table and "Page 1 of 20" in table
    assert table.count('href="/units/') == selectors.UNITS_PER_PAGE  # each unit links its page
    second = _units_table(staff_client.get(f"/runs/{run.pk}/?layer=conv4&page=2").content.decode())
    assert "Units 51–100 of 1000" in second


def test_each_unit_links_its_page_with_its_number_and_channel(staff_client: Client) -> None:
    run = _done_run()
    unit = unit_create(run, 97, label="white-c", concept_category="color", iou=0.3, interpretable=True)
    table = _units_table(staff_client.get(f"/runs/{run.pk}/").content.decode())
    assert f'<a href="/units/{unit.pk}/">unit 98</a> <span class="muted">channel 97</span>' in table
    assert "white-c" not in table and "<td>white</td>" in table
    assert 'alt="Top image 1 of conv4 unit 98"' in table


def test_a_unit_with_a_strip_shows_the_strip_instead_of_its_tiles(staff_client: Client) -> None:
    run = _done_run()
    unit = unit_create(run, 3, images=4, label="roof", iou=0.2)
    unit.strip = f"runs/{run.pk}/conv4/report/strips/unit0004.jpg"
    unit.save()
    images = IMG.findall(_units_table(staff_client.get(f"/runs/{run.pk}/").content.decode()))
    assert len(images) == 1
    assert f'src="/media/runs/{run.pk}/conv4/report/strips/unit0004.jpg"' in images[0]
    assert 'loading="lazy"' in images[0] and 'height="64"' in images[0]


def test_layer_tabs_sort_and_filters(staff_client: Client) -> None:
    run = _done_run(layers=("conv3", "conv4"))
    rows = [
        ("conv3", 0, "sky-s", "scene", 0.30),
        ("conv3", 1, "grass", "object", 0.10),
        ("conv4", 0, "roof", "object", 0.20),
        ("conv4", 1, "red-c", "color", 0.05),
        ("conv4", 2, "roof", "object", 0.45),
        ("conv4", 3, "wheel", "part", 0.01),
    ]
    for layer, channel, label, category, iou in rows:
        unit_create(
            run,
            channel,
            layer,
            images=1,
            label=label,
            concept_category=category,
            iou=iou,
            interpretable=iou > 0.04,
        )

    def shown(query: str) -> list[int]:
        response = staff_client.get(f"/runs/{run.pk}/?{query}")
        assert response.status_code == 200
        return [int(n) for n in re.findall(r">unit (\d+)</a>", _units_table(response.content.decode()))]

    first = staff_client.get(f"/runs/{run.pk}/").content.decode()
    assert '<a href="?layer=conv3#units" aria-current="page">conv3</a>' in first
    assert shown("") == [1, 2]  # the first layer, IoU highest first
    assert shown("layer=conv4") == [3, 1, 2, 4]
    assert shown("layer=conv4&sort=iou_asc") == [4, 2, 1, 3]
    assert shown("layer=conv4&sort=unit") == [1, 2, 3, 4]
    assert shown("layer=conv4&sort=label") == [2, 3, 1, 4]  # red-c, roof (0.45), roof (0.20), wheel
    assert shown("layer=conv4&label=ROO") == [3, 1]
    assert shown("layer=conv4&category=object") == [3, 1]
    assert shown("layer=conv4&min_iou=0.1") == [3, 1]
    assert shown("layer=conv4&interpretable=on") == [3, 1, 2]
    assert shown("layer=conv4&label=roof&page=2") == [3, 1]  # past the last page: the last page
    refused = staff_client.get(f"/runs/{run.pk}/?layer=conv4&min_iou=2").content.decode()
    assert "less than or equal to 1" in refused
    assert shown("layer=conv4&min_iou=2") == [3, 1, 2, 4]  # an invalid filter filters nothing
    assert shown("layer=conv4&category=scene") == [3, 1, 2, 4]  # not a category of conv4: refused
    assert staff_client.get(f"/runs/{run.pk}/?layer=conv9").status_code == 404


def test_the_layer_summary_counts_units_and_unique_concepts() -> None:
    run = _done_run()
    units = _bulk_units(run, "conv4", 300, images=0)
    unit_create(run, 999, "conv4", images=0)  # unlabelled: counted as a unit, in no category
    summary = selectors.run_layer_summary(run=run, layer="conv4")
    labelled: dict[str, int] = defaultdict(int)
    detectors: dict[str, int] = defaultdict(int)
    concepts: dict[str, set[str]] = defaultdict(set)
    for unit in units:
        labelled[unit.concept_category] += 1
        if unit.interpretable:
            detectors[unit.concept_category] += 1
            concepts[unit.concept_category].add(unit.label)
    assert summary.units == 301
    assert summary.interpretable == sum(detectors.values())
    assert summary.concepts == len(set().union(*concepts.values()))
    assert {row.category: (row.units, row.interpretable, row.concepts) for row in summary.categories} == {
        category: (labelled[category], detectors[category], len(concepts[category])) for category in labelled
    }
    assert summary.most == max(labelled.values())


@pytest.mark.parametrize(
    ("label", "shown"),
    [("white-c", "white"), ("meadow-s", "meadow"), ("car", "car"), ("t-shirt", "t-shirt"), ("", "")],
)
def test_concept_display_drops_brodens_suffixes(label: str, shown: str) -> None:
    template = Template("{% load runs_tags %}{{ label|concept_display }}")
    assert template.render(Context({"label": label})) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "estimating…"), (1, "about 1 s left"), (200, "about 4 min left"), (3900, "about 1 h 5 min left")],
)
def test_the_eta_filter_says_a_stored_eta_as_the_run_page_does(seconds: int | None, shown: str) -> None:
    template = Template("{% load runs_tags %}{{ seconds|eta }}")
    assert template.render(Context({"seconds": seconds})) == shown


def test_eta_is_never_zero_while_work_remains() -> None:
    assert selectors.run_eta_seconds(progress=0.01, elapsed_s=100) is None  # too little done to measure
    assert selectors.run_eta_seconds(progress=0.5, elapsed_s=1) is None  # too early
    assert selectors.run_eta_seconds(progress=1.0, elapsed_s=10) == 0
    for progress in [0.02, 0.1, 0.5, 0.65, 0.9, 0.98, 0.999]:
        for elapsed in [3.0, 3.5, 10.0, 61.0, 5000.0]:
            eta = selectors.run_eta_seconds(progress=progress, elapsed_s=elapsed)
            assert eta is not None and eta >= 1, (progress, elapsed)
            # the rate so far: progress / elapsed per second; what is left at that rate, rounded up
            assert eta == max(1, math.ceil((1 - progress) / (progress / elapsed))), (progress, elapsed)
    # A step that reports nothing for a while: the same progress later means a longer wait, not a stale one.
    assert selectors.run_eta_seconds(progress=0.65, elapsed_s=60) > selectors.run_eta_seconds(
        progress=0.65, elapsed_s=6
    )
    assert selectors.eta_display(None) == "estimating…"
    assert selectors.eta_display(1) == "about 1 s left"
    assert selectors.eta_display(59) == "about 59 s left"
    assert selectors.eta_display(61) == "about 2 min left"
    assert selectors.eta_display(3900) == "about 1 h 5 min left"


def _ready_network_and_probe_set() -> tuple[Network, ProbeSet]:
    project = shared_project()
    network = Network.objects.create(
        project=project, name="net", architecture="toy", layers=["conv3", "conv4"], status=Readiness.READY
    )
    probe_set = ProbeSet.objects.create(
        project=project, name="probes", path="/nowhere", image_count=95, status=Readiness.READY
    )
    return network, probe_set


def test_the_launch_message_and_the_progress_line_count_the_same_steps(staff_client: Client) -> None:
    network, probe_set = _ready_network_and_probe_set()
    response = staff_client.post(
        "/runs/new/",
        {
            "project": shared_project().pk,
            "name": "steps",
            "network": network.pk,
            "probe_set": probe_set.pk,
            "layers": "conv3, conv4",
            "shard_size": 10,
            "topk": 5,
            "semantics": "paper",
        },
        follow=True,
    )
    html = response.content.decode()
    run = DissectionRun.objects.get(name="steps")
    assert run.shards_total == 25  # 10 scan + merge + 10 tally + merge + 2 renders + publish
    assert (
        "queued: 25 steps in all: 10 scan shards, a merge, 10 tally shards, a merge, 2 renders (one per "
        "layer) and the publish." in html
    )
    assert "0 / 25 steps (scan 0/10 · merge scans 0/1 · tally 0/10" in html
    status = selectors.run_status(run=run)
    assert sum(phase["total"] for phase in status["phases"]) == status["shards_total"] == 25
    assert status["eta_display"] == "estimating…"  # queued, nothing measured yet


def test_cancel_asks_first_and_changes_nothing_without_confirmation(staff_client: Client) -> None:
    network, probe_set = _ready_network_and_probe_set()
    run = runs.run_launch(
        project=shared_project(), name="to cancel", network=network, probe_set=probe_set, layers=["conv4"]
    )
    run_page = staff_client.get(f"/runs/{run.pk}/").content.decode()
    assert f'href="/runs/{run.pk}/cancel/">Cancel run…</a>' in run_page
    question = staff_client.get(f"/runs/{run.pk}/cancel/").content.decode()
    assert "Cancel run to cancel?" in question and "no units are published" in question
    assert "cannot be resumed" in question and 'name="confirm" value="yes"' in question

    refused = staff_client.post(f"/runs/{run.pk}/cancel/")
    assert refused.status_code == 400 and "Nothing was changed" in refused.content.decode()
    run.refresh_from_db()
    assert run.status == DissectionRun.Status.QUEUED and run.finished_at is None
    staff_client.post(f"/runs/{run.pk}/cancel/", {"confirm": "no"})
    run.refresh_from_db()
    assert run.status == DissectionRun.Status.QUEUED

    done = staff_client.post(f"/runs/{run.pk}/cancel/", {"confirm": "yes"}, follow=True)
    assert "Run cancelled" in done.content.decode()
    run.refresh_from_db()
    assert run.status == DissectionRun.Status.CANCELLED
    again = staff_client.get(f"/runs/{run.pk}/cancel/", follow=True).content.decode()
    assert "A cancelled run cannot be cancelled." in again


def test_the_cam_gallery_captions_each_unit_by_number_channel_and_label(staff_client: Client) -> None:
    run = _done_run()
    unit = unit_create(
        run, 4, images=1, label="meadow-s", concept_category="scene", iou=0.2, interpretable=True
    )
    overlay = store_bytes(f"runs/{run.pk}/cam/000.png", b"png")
    entry = {
        "image": "synth/000001.png",
        "overlay": overlay,
        "prediction": "house",
        "probability": 0.875,
        "layer": "conv4",
        "width": 224,
        "height": 224,
        "units": [
            {"unit": 5, "channel": 4, "contribution": 1.5, "label": "meadow-s", "interpretable": True},
            {"unit": 8, "channel": 7, "contribution": 0.5, "label": "", "interpretable": False},
        ],
    }
    run.report = {"cam": store_bytes(f"runs/{run.pk}/cam/gallery.json", json.dumps([entry]).encode())}
    run.save()
    html = staff_client.get(f"/runs/{run.pk}/").content.decode()
    gallery = html[html.index("<h2>CAM gallery</h2>") : html.index('id="units"')]
    assert "<strong>house</strong> 0.88" in gallery
    assert f'<a href="/units/{unit.pk}/">unit 5</a> <span class="muted">channel 4</span> · meadow<' in gallery
    assert "unit 8 <span" in gallery  # channel 7 is no unit of this run: no link
    assert 'width="224" height="224"' in gallery and "meadow-s" not in gallery


def test_a_weights_error_names_the_upload_and_advice_the_form_can_follow(settings: Any) -> None:
    with pytest.raises(runs.RunError) as caught:
        runs.network_register(
            project=shared_project(),
            name="junk",
            architecture="toy",
            weights=File(ContentFile(b"not a checkpoint"), name="model.pth"),
            inspect_now=True,
        )
    message = str(caught.value)
    assert message.startswith("Network: model.pth: cannot be read"), message
    assert str(settings.MEDIA_ROOT) not in message and "--trust-pickle" not in message
    assert "torch.save(model.state_dict()" in message


def test_the_nav_and_the_dashboard_link_to_runs(staff_client: Client) -> None:
    run = _done_run("linked run")
    html = staff_client.get("/").content.decode()
    assert '<a href="/runs/">Runs</a>' in html
    assert f'<a href="/runs/{run.pk}/">linked run</a>' in html
