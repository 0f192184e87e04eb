"""Feature visualizations of a run's units: a sharded job on the `gpu` queue, and the reads pages make.

Storage layout (fixed; the 2AFC task reads it through `featviz_keys`):
    runs/<run id>/<layer>/featviz/unit-<channel:04d>-<k>.png   k = 0-based among the unit's images
    runs/<run id>/<layer>/featviz/featviz.json                 dissection.featviz.output's schema 1: each
        image's "file" relative to this folder and its final activation; each unit's relative activation
        (vs its best probe image, from the dissection) and selectivity
    runs/<run id>/<layer>/featviz/plan.json, shards/shard-<i>.json   the launch and each group's result

A launch writes plan.json (the settings, the unit groups, a fresh token) and queues one task per group of
units, optimized together as one batch. Each shard stores its PNGs and shard-<i>.json under the same keys
whatever the delivery, then, holding the job's row lock, merges every shard of the current plan into
featviz.json; the last one finishes the job and re-renders the layer's report with the images. A shard of an
older plan (relaunched meanwhile) is dropped. Progress and ETA: the `runs.models.Job` `featviz:<run>:<layer>`.
A job without progress for SHARD_STALE_AFTER_S is handed back by the sweep (`runs.services.runs_sweep`): the
groups whose shard-<i>.json is not stored are queued again, or the merge (`featviz_merge_run`) when all are.
"""

from __future__ import annotations

import io
import json
import logging
import math
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Max
from django.db.models.functions import Least
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from runs.errors import RunError
from runs.models import DissectionRun, Job, Network, Unit, UnitImage
from runs.selectors import eta_display, report_unit_href, run_eta_seconds
from runs.services import (
    FEATVIZ_JOB_PREFIX,
    featviz_plan_key,
    featviz_prefix,
    featviz_shard_key,
    job_fail,
    job_finish,
    task_send,
)
from runs.storage import report_prefix, store_bytes

log = logging.getLogger(__name__)

INDEX = "featviz.json"
UNITS_PER_SHARD = 8
DEFAULT_STEPS = 256
DEFAULT_SIZE = 128
DEFAULT_IMAGES = 1
DEFAULT_LR = 0.05  # Lucid's; a small network at a small size gets there in fewer steps at 0.2
MAX_STEPS = 4096
MAX_SIZE = 512
MAX_IMAGES = 8
SECTION = "featviz"  # the run page's anchor


# --- storage layout and reads ------------------------------------------------------------------------------


def image_name(channel: int, k: int) -> str:
    return f"unit-{channel:04d}-{k}.png"


def image_key(run_id: int, layer: str, channel: int, k: int) -> str:
    return f"{featviz_prefix(run_id, layer)}/{image_name(channel, k)}"


def _read_json(key: str) -> dict[str, Any] | None:
    if not default_storage.exists(key):
        return None
    with default_storage.open(key, "rb") as handle:
        return dict(json.load(handle))


def featviz_index(*, run_id: int, layer: str) -> dict[str, Any] | None:
    """The layer's stored featviz.json, or None before the job has stored any unit."""
    return _read_json(f"{featviz_prefix(run_id, layer)}/{INDEX}")


def index_keys(index: dict[str, Any] | None, *, run_id: int, layer: str, channel: int) -> list[str]:
    """The media keys of one unit's images (maximizing it) in `index`, in order."""
    if index is None:
        return []
    images = [
        entry
        for entry in index.get("images", [])
        if entry["channel"] == channel and entry.get("direction", "positive") == "positive"
    ]
    prefix = featviz_prefix(run_id, layer)
    return [f"{prefix}/{entry['file']}" for entry in sorted(images, key=lambda entry: entry["index"])]


def featviz_keys(*, unit: Unit) -> list[str]:
    """The stored media keys of the unit's feature-visualization PNGs in order; [] when none."""
    index = featviz_index(run_id=unit.run_id, layer=unit.layer)
    return index_keys(index, run_id=unit.run_id, layer=unit.layer, channel=unit.channel)


@dataclass(frozen=True)
class UnitFeatviz:
    """What a page shows of one unit's feature visualizations (image URLs through the media view)."""

    urls: list[str]
    activations: list[float]
    relative_activation: float | None
    selectivity: float | None
    best_probe_activation: float | None
    steps: int
    size: int


def unit_featviz(
    index: dict[str, Any] | None, *, run_id: int, layer: str, channel: int
) -> UnitFeatviz | None:
    """One unit's entry of a layer's `index`, or None when it has no image there."""
    keys = index_keys(index, run_id=run_id, layer=layer, channel=channel)
    if index is None or not keys:
        return None
    entry: dict[str, Any] = next((u for u in index.get("units", []) if u["channel"] == channel), {})
    images = sorted(
        (i for i in index["images"] if i["channel"] == channel and i.get("direction") == "positive"),
        key=lambda i: i["index"],
    )
    return UnitFeatviz(
        urls=[reverse("runs:media", args=[key]) for key in keys],
        activations=[float(i["activation"]["max"]) for i in images],
        relative_activation=entry.get("relative_activation"),
        selectivity=entry.get("selectivity"),
        best_probe_activation=entry.get("best_probe_activation"),
        steps=int(index.get("recipe", {}).get("steps", 0)),
        size=int(index.get("size", 0)),
    )


def featviz_unit(*, unit: Unit) -> UnitFeatviz | None:
    """The unit page's feature visualizations of `unit`, or None."""
    index = featviz_index(run_id=unit.run_id, layer=unit.layer)
    return unit_featviz(index, run_id=unit.run_id, layer=unit.layer, channel=unit.channel)


def featviz_units(*, run_id: int, layer: str, channels: Sequence[int]) -> dict[int, UnitFeatviz]:
    """The run page's: the listed channels' feature visualizations (one read of the layer's index)."""
    index = featviz_index(run_id=run_id, layer=layer)
    found = {c: unit_featviz(index, run_id=run_id, layer=layer, channel=c) for c in channels}
    return {channel: view for channel, view in found.items() if view is not None}


def featviz_link(run_id: int, layer: str) -> str:
    """The run page at the layer's tab, scrolled to the feature-visualization section."""
    return f"{reverse('runs:run_detail', args=[run_id])}?{urlencode({'layer': layer})}#{SECTION}"


BROKER_WAIT = "The task broker is unreachable: the images are made once it is back."


def job_key(run_id: int, layer: str) -> str:
    return f"{FEATVIZ_JOB_PREFIX}{run_id}:{layer}"


@dataclass(frozen=True)
class FeatvizLayer:
    """One layer's feature-visualization job and results, as the run page's section shows them."""

    layer: str
    job: Job | None
    percent: int
    eta: str
    summary: dict[str, Any] | None
    units: int


def featviz_layers(*, run: DissectionRun, layers: Sequence[str]) -> list[FeatvizLayer]:
    """Per layer with a job or stored results: the job's progress and ETA, and the check's summary."""
    jobs = {
        job.key: job
        for job in Job.objects.filter(project_id=run.project_id, key__startswith=FEATVIZ_JOB_PREFIX)
    }
    now = timezone.now()
    views = []
    for layer in layers:
        job = jobs.get(job_key(run.pk, layer))
        index = featviz_index(run_id=run.pk, layer=layer)
        if job is None and index is None:
            continue
        eta = ""
        if job is not None and job.status == Job.Status.RUNNING:
            fraction = job.done / job.total if job.total else 0.0
            elapsed = (now - job.started_at).total_seconds() if job.started_at else 0.0
            eta = eta_display(run_eta_seconds(progress=fraction, elapsed_s=elapsed))
        views.append(
            FeatvizLayer(
                layer=layer,
                job=job,
                percent=job.percent if job is not None else 100,
                eta=eta,
                summary=index.get("summary") if index else None,
                units=len(index.get("units", [])) if index else 0,
            )
        )
    return views


# --- launch ------------------------------------------------------------------------------------------------


def featviz_launch(
    *,
    run: DissectionRun,
    layer: str,
    steps: int = DEFAULT_STEPS,
    size: int = DEFAULT_SIZE,
    images: int = DEFAULT_IMAGES,
    units_per_shard: int = UNITS_PER_SHARD,
    lr: float = DEFAULT_LR,
    seed: int = 0,
) -> Job:
    """Queue (after commit) feature visualization of every unit of `layer`, `units_per_shard` units per task;
    returns the job that shows its progress. A relaunch replaces the plan; the old plan's shards drop out."""
    if run.status != DissectionRun.Status.DONE or run.network_id is None:
        raise RunError("Feature visualization needs a finished dissection run of a network.")
    if run.network is not None and run.network.kind != Network.Kind.CLASSIFIER:
        raise RunError(
            f"Feature visualization optimizes a classifier's input image; {run.network.name!r} is a "
            f"{run.network.get_kind_display().lower()} (paint with its units instead)."
        )
    channels = list(run.units.filter(layer=layer).order_by("channel").values_list("channel", flat=True))
    if not channels:
        layers = ", ".join(run.units.order_by("layer").values_list("layer", flat=True).distinct())
        raise RunError(f"Layer: run {run.name!r} has no layer {layer!r} (its layers: {layers or 'none'}).")
    for name, value, low, high in (
        ("Steps", steps, 1, MAX_STEPS),
        ("Size", size, 16, MAX_SIZE),
        ("Images per unit", images, 1, MAX_IMAGES),
        ("Units per task", units_per_shard, 1, 256),
    ):
        if not low <= value <= high:
            raise RunError(f"{name}: {value} is outside {low}–{high}.")
    if not 0 < lr <= 1:
        raise RunError(f"Learning rate: {lr} is outside (0, 1].")
    groups = [channels[start : start + units_per_shard] for start in range(0, len(channels), units_per_shard)]
    plan = {
        "token": uuid.uuid4().hex,
        "layer": layer,
        "steps": steps,
        "size": size,
        "images": images,
        "lr": lr,
        "seed": seed,
        "shards": groups,
    }
    store_bytes(featviz_plan_key(run.pk, layer), json.dumps(plan).encode())
    link = featviz_link(run.pk, layer)
    with transaction.atomic():
        job, _ = Job.objects.select_for_update().get_or_create(
            project_id=run.project_id, key=job_key(run.pk, layer), defaults={"title": ""}
        )
        job.title = f"Feature visualizations of {run.name} · {layer}"
        job.status, job.done, job.total = Job.Status.RUNNING, 0, len(groups) * steps
        job.note = f"groups of units done: 0/{len(groups)}"
        job.error, job.link = "", link
        job.started_at, job.finished_at = timezone.now(), None
        job.save()

        def send() -> None:
            token = plan["token"]
            for index in range(len(groups)):
                if not task_send("featviz_shard", run.pk, layer, index, token):
                    # Each further send would wait out its retries: the job waits, and the sweep queues
                    # every group not stored yet once the broker is back.
                    Job.objects.filter(pk=job.pk).update(status=Job.Status.QUEUED, note=BROKER_WAIT)
                    return

        transaction.on_commit(send)
    return job


# --- one shard, on a worker --------------------------------------------------------------------------------


def _best_activations(run: DissectionRun, layer: str, channels: int) -> Any:
    """Each channel's best probe-set activation from the dissection's top images (NaN where none)."""
    import numpy as np

    best = np.full(channels, np.nan)
    rows = (
        UnitImage.objects.filter(unit__run=run, unit__layer=layer, max_activation__isnull=False)
        .values("unit__channel")
        .annotate(best=Max("max_activation"))
    )
    for row in rows:
        if 0 <= row["unit__channel"] < channels:
            best[row["unit__channel"]] = row["best"]
    return best


def _lock_job(job_id: int) -> Job:
    """Lock the job's row for this transaction (a write, so that SQLite serializes writers here too)."""
    Job.objects.select_for_update().filter(pk=job_id).update(status=F("status"))
    return Job.objects.get(pk=job_id)


def _current(
    run_id: int, layer: str, token: str, what: str
) -> tuple[dict[str, Any], DissectionRun, Job] | None:
    """The plan, run and job a task of plan `token` works for; None (logged) when the plan was superseded by a
    relaunch or the run is gone, so the task is dropped."""
    plan = _read_json(featviz_plan_key(run_id, layer))
    run = DissectionRun.objects.select_related("network").filter(pk=run_id).first()
    if plan is None or plan["token"] != token or run is None:
        log.info("featviz %s of run %s layer %s: superseded or gone, dropped", what, run_id, layer)
        return None
    return plan, run, Job.objects.get(project_id=run.project_id, key=job_key(run_id, layer))


def featviz_shard_run(*, run_id: int, layer: str, index: int, token: str) -> None:
    """Optimize the images of the plan's group `index` and store them; the last group finishes the job."""
    current = _current(run_id, layer, token, f"shard {index}")
    if current is None:
        return
    plan, run, job = current
    if job.status == Job.Status.FAILED:
        return
    try:
        document = _visualize(run, plan, index, job.pk)
        store_bytes(featviz_shard_key(run_id, layer, index), json.dumps(document, indent=1).encode())
        _merge(run, plan, job.pk)
    except (OperationalError, InterfaceError):
        raise  # the task retries with backoff (runs.tasks.DatabaseRetrying); the job is not failed for it
    except Exception as exc:
        where = f"group {index + 1} of {len(plan['shards'])}"
        job_fail(job_id=job.pk, error=f"{where}: {type(exc).__name__}: {exc}")
        raise


def featviz_merge_run(*, run_id: int, layer: str, token: str) -> None:
    """The merge alone, queued by the sweep when every group's result is stored but the job never finished
    (the last group's merge was lost): nothing is optimized again."""
    current = _current(run_id, layer, token, "merge")
    if current is not None:
        plan, run, job = current
        _merge(run, plan, job.pk)


def _visualize(run: DissectionRun, plan: dict[str, Any], index: int, job_id: int) -> dict[str, Any]:
    """Optimize the group's images (one batch), store the PNGs, and return the group's featviz.json."""
    from dissection.featviz.output import document
    from dissection.featviz.render import Recipe, layer_shape, visualize
    from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
    from runs.networks import network_model

    assert run.network is not None, "featviz_launch checks the run has a network"
    model = network_model(run.network)
    layer, channels = plan["layer"], list(plan["shards"][index])
    recipe = Recipe(steps=plan["steps"], lr=plan["lr"], diversity=plan["images"])
    count, _, _ = layer_shape(model, layer, plan["size"])
    reported = [0]

    def progress(done: int, total: int) -> None:
        if done - reported[0] >= max(1, total // 20) or done == total:
            delta, reported[0] = done - reported[0], done
            Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
                done=Least(F("done") + delta, F("total") - 1), updated_at=timezone.now()
            )

    vis = visualize(
        model,
        layer,
        channels,
        size=plan["size"],
        recipe=recipe,
        seed=plan["seed"] + index,
        batch_size=len(channels) * plan["images"],
        progress=progress,
    )
    best = _best_activations(run, layer, count)
    has_best = not all(math.isnan(value) for value in best)
    featviz = document(
        vis,
        model=run.network.name,
        seed=plan["seed"] + index,
        recipe=recipe,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        best=best if has_best else None,
        best_source={"source": "dissection", "path": report_prefix(run.pk, layer)} if has_best else None,
    )
    pixels = (vis.images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    from PIL import Image

    for entry, image in zip(featviz["images"], pixels, strict=True):
        entry["file"] = image_name(entry["channel"], entry["index"])
        buffer = io.BytesIO()
        Image.fromarray(image, "RGB").save(buffer, format="PNG")
        store_bytes(image_key(run.pk, layer, entry["channel"], entry["index"]), buffer.getvalue())
    featviz["token"] = plan["token"]
    return featviz


def _summary(units: list[dict[str, Any]]) -> dict[str, Any]:
    """`dissection.featviz.check.Check.summary` over the merged groups' per-unit figures."""
    relative = [u["relative_activation"] for u in units if u.get("relative_activation") is not None]
    selective = [u["selectivity"] for u in units if u.get("selectivity") is not None]
    return {
        "units": len(units),
        "units_with_figures": len(relative),
        "median_relative_activation": statistics.median(relative) if relative else None,
        "share_above_1": sum(r > 1 for r in relative) / len(relative) if relative else None,
        "median_selectivity": statistics.median(selective) if selective else None,
    }


def _merge(run: DissectionRun, plan: dict[str, Any], job_id: int) -> None:
    """Under the job's lock: featviz.json from every stored group of the plan, the job's progress, and when
    all are in, the job finished and the layer's report re-rendered with the images."""
    layer, prefix, groups = plan["layer"], featviz_prefix(run.pk, plan["layer"]), len(plan["shards"])
    with transaction.atomic():
        job = _lock_job(job_id)
        if job.status == Job.Status.FAILED or _read_json(featviz_plan_key(run.pk, layer)) != plan:
            return
        parts = [_read_json(featviz_shard_key(run.pk, layer, i)) for i in range(groups)]
        done = [part for part in parts if part is not None and part.get("token") == plan["token"]]
        merged = {key: value for key, value in done[0].items() if key not in ("token", "summary", "seed")}
        merged["seed"] = plan["seed"]
        merged["units"] = sorted((u for part in done for u in part["units"]), key=lambda u: u["channel"])
        merged["images"] = [i for part in done for i in part["images"]]
        if merged.get("best_activations"):
            merged["summary"] = _summary(merged["units"])
        store_bytes(f"{prefix}/{INDEX}", json.dumps(merged, indent=1).encode())
        if len(done) < groups:
            Job.objects.filter(pk=job_id).update(
                done=len(done) * plan["steps"],
                note=f"groups of units done: {len(done)}/{groups}",
                updated_at=timezone.now(),
            )
            return
    _report_rerender(run, layer, merged)
    job_finish(job_id=job_id, link=job.link)


def _report_rerender(run: DissectionRun, layer: str, featviz: dict[str, Any]) -> None:
    """The layer's stored report.html again, now with each unit's feature visualizations beside its strip."""
    from dissection.render import report_html

    key = run.report.get(layer)
    result = f"{report_prefix(run.pk, layer)}/result.json"
    if not key or not default_storage.exists(result):
        return
    with default_storage.open(result, "rb") as handle:
        document = json.load(handle)
    page = report_html(
        document,
        featviz=featviz,
        featviz_href="../featviz/",
        unit_href=report_unit_href(run_id=run.pk, layer=layer),
    )
    store_bytes(key, page.encode())
