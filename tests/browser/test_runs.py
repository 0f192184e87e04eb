"""Dissection runs in Chromium: register the toy network and the synthetic probe set, launch a run, watch its
progress update while its shards are worked, build its CAM gallery, then make and publish a batch from its
units."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from playwright.sync_api import Page, expect

from annotate.models import Batch
from runs import services as runs
from runs.models import DissectionRun, Network, ProbeSet, Shard
from runs.tasks import cam_gallery, dissect_shard, network_inspect, probe_set_inspect
from tests.browser.conftest import Tabs
from tests.browser.pages import Check

pytestmark = [pytest.mark.browser, pytest.mark.slow]

POLL_TIMEOUT_MS = 15_000
GALLERY_IMAGES = 8


def work_shard(run: DissectionRun) -> bool:
    """Work the next pending shard of `run` in this process, as one Celery worker would; False once the
    run has stopped."""
    run.refresh_from_db()
    if run.status not in runs.ACTIVE:
        return False
    shard = (
        Shard.objects.filter(run=run)
        .exclude(status=Shard.Status.DONE)
        .order_by("phase", "layer", "index")
        .first()
    )
    assert shard is not None, f"run {run.name} is {run.status} with no pending shard"
    dissect_shard.run(shard.pk)
    return True


def test_launch_a_run_watch_its_progress_and_label_its_units(
    tabs: Tabs,
    page: Page,
    check_page: Check,
    log_in: Callable[[Page], None],
    expect_http_error: Callable[[Page, int], None],
    settings: Any,
    tmp_path: Path,
    toy_weights: Path,
    probe_set_dir: Path,
) -> None:
    settings.WORK_DIR = tmp_path / "work"
    log_in(page)
    page.get_by_role("link", name="Dissection runs").click()
    check_page(page, "runs_empty")

    page.get_by_role("link", name="Register a network").click()
    page.get_by_label("Name", exact=True).fill("toy")
    page.get_by_label("Architecture", exact=True).fill("toy")
    page.get_by_label("Weights", exact=True).set_input_files(toy_weights)
    check_page(page, "network_form")
    page.get_by_role("button", name="Register").click()
    expect(page.locator("ul.messages")).to_contain_text("Network 'toy' registered; a worker is checking it.")
    expect(page.get_by_text("toy (toy, being checked)")).to_be_visible()
    network_inspect.run(Network.objects.get(name="toy").pk)  # what the worker that takes the task does
    page.reload()
    expect(page.get_by_text("toy (toy)", exact=True)).to_be_visible()
    check_page(page, "runs_network")

    page.get_by_role("link", name="Register a probe set").click()
    page.get_by_label("Name", exact=True).fill("synthetic")
    page.get_by_label("Path", exact=True).fill(str(probe_set_dir))
    check_page(page, "probe_set_form")
    page.get_by_role("button", name="Register").click()
    expect(page.locator("ul.messages")).to_contain_text(
        "Probe set 'synthetic' registered; a worker is reading it."
    )
    probe_set_inspect.run(ProbeSet.objects.get(name="synthetic").pk)
    page.reload()
    expect(page.get_by_text(f"synthetic (160 images, {probe_set_dir})")).to_be_visible()
    check_page(page, "runs_probe_set")

    page.get_by_role("link", name="Launch a run").click()
    page.get_by_label("Name", exact=True).fill("toy run")
    page.get_by_label("Network", exact=True).select_option(label="toy")
    page.get_by_label("Probe set", exact=True).select_option(label="synthetic")
    page.get_by_label("Layers", exact=True).fill("conv4")
    page.get_by_label("Images per shard", exact=True).fill("80")
    page.get_by_label("Top images per unit", exact=True).fill("6")
    check_page(page, "run_form")
    page.get_by_label("Layers", exact=True).fill("conv9")
    expect_http_error(page, 400)
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_role("alert")).to_contain_text("conv9")
    check_page(page, "run_form_refused")
    expect(page.get_by_label("Name", exact=True)).to_have_value("toy run")
    expect(page.get_by_label("Images per shard", exact=True)).to_have_value("80")
    page.get_by_label("Layers", exact=True).fill("conv4")
    page.get_by_role("button", name="Launch").click()
    # The launch message and the progress line count the same steps: every shard of every phase.
    expect(page.locator("ul.messages")).to_contain_text(
        "Run 'toy run' queued: 8 steps in all: 2 scan shards, a merge, 2 tally shards, a merge, 1 render"
    )
    expect(page.locator("#run-shards")).to_have_text(re.compile(r"^0 / 8 steps \(scan 0/2 · "))
    expect(page.locator("#run-percent")).to_have_text("0%")
    check_page(page, "run_queued")
    run = DissectionRun.objects.get(name="toy run")

    # The page polls the status while a worker gets through the shards, and updates without a reload.
    page.evaluate("window.__samePage = true")
    if connection.vendor == "sqlite":
        # The in-memory SQLite test database is one shared-cache connection, whose table locks ignore the
        # busy timeout: hold each poll until this thread is back in Playwright, i.e. not writing.
        page.route("**/status.json", lambda route: route.continue_())
    assert work_shard(run) and work_shard(run)
    expect(page.locator("#run-shards")).to_have_text(re.compile(r"^2 / 8 steps"), timeout=POLL_TIMEOUT_MS)
    percent = int(page.locator("#run-percent").inner_text().rstrip("%"))
    assert 0 < percent < 100
    expect(page.locator("#run-state")).to_have_text("Running")
    assert page.evaluate("window.__samePage === true")
    check_page(page, "run")

    while work_shard(run):
        pass
    run.refresh_from_db()
    assert run.status == DissectionRun.Status.DONE, run.error
    # Done: the page reloads itself and lists the units with their top images.
    expect(page.get_by_role("heading", name="Units", exact=True)).to_be_visible(timeout=POLL_TIMEOUT_MS)
    expect(page.locator("#run-state")).to_have_text("Done")
    expect(page.locator("#run-percent")).to_have_text("100%")
    check_page(page, "run_done")

    # One numbering: the run table's first unit is tally.csv's row of that number, on its unit page and in
    # the layer's report, whose unit link leads to the same unit page.
    with default_storage.open(run.report["conv4"].rsplit("/", 1)[0] + "/tally.csv", "rb") as handle:
        tally = {int(row["unit"]): row for row in csv.DictReader(io.StringIO(handle.read().decode()))}
    first = page.locator("table.units tbody tr").first
    link = first.get_by_role("link", name=re.compile(r"^unit \d+$"))
    number = int(link.inner_text().split()[1])
    expect(first).to_contain_text(f"channel {number - 1}")
    expect(first).to_contain_text(re.sub(r"-[cs]$", "", tally[number]["label"]))
    link.click()
    page.wait_for_url("**/units/*/")
    unit_page = page.url
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Unit {number} · channel {number - 1}")
    check_page(page, "run_unit_page_of_tally_row")
    page.go_back()
    page.get_by_role("link", name="Report of layer conv4").click()
    page.wait_for_url("**/report.html")
    check_page(page, "run_report")
    page.get_by_role("link", name=f"unit {number}", exact=True).click()
    page.wait_for_url(unit_page)
    page.goto(f"/runs/{run.pk}/")

    page.get_by_role("button", name="Build the CAM gallery").click()
    expect(page.locator("ul.messages")).to_contain_text("CAM gallery queued")
    cam_gallery.run(run.pk, GALLERY_IMAGES)  # what the worker that takes the queued task does
    page.reload()
    expect(page.get_by_role("heading", name="CAM gallery")).to_be_visible()
    expect(page.get_by_role("img", name=re.compile(r"^CAM of "))).to_have_count(GALLERY_IMAGES)
    check_page(page, "run_gallery")

    second = runs.run_launch(
        project=run.project, name="second run", network=run.network, probe_set=run.probe_set, layers=["conv4"]
    )
    page.goto(f"/runs/{second.pk}/")
    check_page(page, "run_second")
    page.get_by_role("link", name="Cancel run…").click()
    expect(page.get_by_role("heading", name="Cancel run second run?")).to_be_visible()
    expect(page.get_by_text("no units are published")).to_be_visible()
    check_page(page, "run_cancel_confirm")
    page.get_by_role("link", name="Keep it running").click()
    expect(page.locator("#run-state")).to_have_text("Queued")
    page.get_by_role("link", name="Cancel run…").click()
    page.get_by_role("button", name="Cancel the run").click()
    expect(page.locator("ul.messages")).to_contain_text("Run cancelled")
    expect(page.locator("#run-state")).to_have_text("Cancelled")
    check_page(page, "run_cancelled")
    page.goto(f"/runs/{run.pk}/")

    page.get_by_role("link", name="Create a batch from the units of conv4").click()
    expect(page.get_by_label("Layer", exact=True)).to_have_value("conv4")
    page.get_by_label("Title", exact=True).fill("Label the toy model's conv4")
    page.get_by_label("A random sample").check()
    page.get_by_label("Sample size", exact=True).fill("2")
    page.get_by_label("Workers per unit", exact=True).fill("1")
    page.get_by_label("Images per task", exact=True).fill("6")
    check_page(page, "run_batch_form")
    page.get_by_role("button", name="Create draft batch").click()
    expect(page.locator("ul.messages")).to_contain_text("Draft batch created with 2 tasks.")
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("ul.messages")).to_contain_text("Batch published.")
    check_page(page, "run_batch")
    batch = Batch.objects.get(title="Label the toy model's conv4")
    assert {task.unit.run_id for task in batch.tasks.select_related("unit")} == {run.pk}

    worker = tabs.open()
    worker.goto(page.locator("code.link").inner_text())
    check_page(worker, "worker_start")
    worker.get_by_role("button", name="Start").click()
    worker.wait_for_url("**/w/task/*/")
    expect(worker.locator(".tile img")).to_have_count(6)
    check_page(worker, "run_worker_preview")
