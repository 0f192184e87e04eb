"""Reads for dissection runs: what the run pages and the status endpoint show."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from django.core.files.storage import default_storage
from django.db.models import Count, F, Prefetch, Q, QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from dissection.compare import LoadedRun, RunSpec
from runs.models import DissectionRun, Job, Network, ProbeSet, Shard, Unit, UnitImage
from runs.storage import fetch

ACTIVE = (DissectionRun.Status.QUEUED, DissectionRun.Status.RUNNING)
# An ETA needs this share of the work done and this much time run: before, the rate is mostly start-up.
ETA_MIN_PROGRESS = 0.02
ETA_MIN_ELAPSED_S = 3.0
UNITS_PER_PAGE = 50
THUMBNAILS_PER_UNIT = 4


def run_status(*, run: DissectionRun) -> dict[str, Any]:
    """The JSON the run page polls: status, progress (0..1), ETA, error, and the steps done of all the run's
    steps (every shard of every phase, the total fixed at launch), phase by phase."""
    active = run.status in ACTIVE
    eta = None
    if active and run.started_at is not None:
        eta = run_eta_seconds(
            progress=run.progress, elapsed_s=(timezone.now() - run.started_at).total_seconds()
        )
    phases = run_phases(run=run)
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "progress": round(run.progress, 4),
        "percent": int(run.progress * 100),
        "eta_seconds": eta,
        "eta_display": eta_display(eta) if active else "",
        "error": run.error,
        "shards_done": run.shards_done,
        "shards_total": run.shards_total,
        "phases": phases,
        "steps_display": steps_display(done=run.shards_done, total=run.shards_total, phases=phases),
        "waits_for_broker": run_waits_for_broker(run=run),
        "finished": run.status
        in (DissectionRun.Status.DONE, DissectionRun.Status.FAILED, DissectionRun.Status.CANCELLED),
    }


def run_eta_seconds(*, progress: float, elapsed_s: float) -> int | None:
    """Seconds left at the rate measured since the run started (progress per second so far), rounded up:
    None while too little is done to measure a rate, at least 1 while work remains, 0 once it is all done.
    Read at each poll, so a step that reports no progress for a while makes the estimate grow, not sit at a
    stale figure."""
    if progress >= 1.0:
        return 0
    if progress < ETA_MIN_PROGRESS or elapsed_s < ETA_MIN_ELAPSED_S:
        return None
    return max(1, math.ceil(elapsed_s * (1.0 - progress) / progress))


def eta_display(seconds: int | None) -> str:
    """ "about 40 s left", "about 3 min left", "about 1 h 5 min left"; "estimating…" without a figure."""
    if seconds is None:
        return "estimating…"
    if seconds < 60:
        return f"about {seconds} s left"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60} min left"


def run_phases(*, run: DissectionRun) -> list[dict[str, Any]]:
    """Each phase of the run with its steps done and planned: one scan and one tally shard per slice of the
    probe set, one merge after each, one render per layer, one publish (the sum is `shards_total`). An
    imported run has none."""
    if not run.shards_total:
        return []
    slices = (run.shards_total - len(run.layers) - 3) // 2
    planned = {
        Shard.Phase.SCAN: slices,
        Shard.Phase.MERGE_SCAN: 1,
        Shard.Phase.TALLY: slices,
        Shard.Phase.MERGE_TALLY: 1,
        Shard.Phase.RENDER: len(run.layers),
        Shard.Phase.PUBLISH: 1,
    }
    done = {
        row["phase"]: row["n"]
        for row in Shard.objects.filter(run_id=run.pk, status=Shard.Status.DONE)
        .order_by()
        .values("phase")
        .annotate(n=Count("id"))
    }
    return [
        {"phase": phase.value, "label": phase.label, "done": done.get(phase.value, 0), "total": total}
        for phase, total in planned.items()
    ]


def steps_display(*, done: int, total: int, phases: Sequence[dict[str, Any]]) -> str:
    """ "5 / 23 steps (scan 2/2 · merge scans 1/1 · tally 2/2 · …)": one total from start to end."""
    if not total:
        return ""
    detail = " · ".join(f"{p['label'].lower()} {p['done']}/{p['total']}" for p in phases)
    return f"{done} / {total} steps ({detail})"


def run_plan_display(*, run: DissectionRun) -> str:
    """What a launched run will do, in the words and the total its page then counts."""
    slices = (run.shards_total - len(run.layers) - 3) // 2
    return (
        f"{run.shards_total} steps in all: {slices} scan shards, a merge, {slices} tally shards, a merge, "
        f"{len(run.layers)} render{'s' if len(run.layers) != 1 else ''} (one per layer) and the publish"
    )


def run_reports(*, run: DissectionRun) -> list[tuple[str, str]]:
    """(layer, URL of its report.html) for every rendered layer of a finished run. Always through the media
    view, even on S3: it serves the report with a no-script policy, and the strips the report links to
    relatively come through it too (a private bucket answers unsigned links with 403)."""
    return [
        (layer, reverse("runs:media", args=[run.report[layer]]))
        for layer in run.layers
        if layer in run.report
    ]


def report_unit_href(*, run_id: int, layer: str) -> str:
    """Where a stored report.html links its units: the run's address of a unit by its number
    (`runs:run_unit`, which sends on to the unit page), "{unit}" (`dissection.render.UNIT_PLACEHOLDER`; the
    selectors stay clear of the renderer's torch import) for the number. By number rather than the unit
    page's id: the report is written before the units are published."""
    return reverse("runs:run_unit", args=[run_id, layer, 1]).removesuffix("1/") + "{unit}/"


def unit_by_number(*, user: Any, run_id: int, layer: str, number: int) -> Unit | None:
    """Unit `number` (channel + 1) of `layer` in a run of the user's projects; else None."""
    return Unit.objects.filter(
        run__in=DissectionRun.objects.visible_to(user), run_id=run_id, layer=layer, channel=number - 1
    ).first()


# The run page's sort orders: key in the URL -> (what the menu says, ordering).
UNIT_SORTS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "iou": ("IoU, highest first", (F("iou").desc(nulls_last=True), "channel")),
    "iou_asc": ("IoU, lowest first", (F("iou").asc(nulls_last=True), "channel")),
    "unit": ("Unit number", ("channel",)),
    "label": ("Label", ("label", F("iou").desc(nulls_last=True), "channel")),
    "category": ("Category", ("concept_category", F("iou").desc(nulls_last=True), "channel")),
}


@dataclass(frozen=True)
class UnitFilter:
    """What the run page's unit list is narrowed to and sorted by (all optional)."""

    label: str = ""
    category: str = ""
    min_iou: float | None = None
    interpretable_only: bool = False
    sort: str = "iou"


def run_units(
    *,
    run: DissectionRun,
    layer: str | None = None,
    filters: UnitFilter | None = None,
    thumbnails: int | None = None,
) -> QuerySet[Unit]:
    """The units of the run (of one `layer`, or of every layer in layer order), filtered and sorted, with
    their images prefetched: all of them, or the first `thumbnails` (the run page's), only for the units a
    page evaluates."""
    filters = filters or UnitFilter()
    units = run.units.all() if layer is None else run.units.filter(layer=layer)
    if filters.label:
        units = units.filter(label__icontains=filters.label)
    if filters.category:
        units = units.filter(concept_category=filters.category)
    if filters.min_iou is not None:
        units = units.filter(iou__gte=filters.min_iou)
    if filters.interpretable_only:
        units = units.filter(interpretable=True)
    ordering = UNIT_SORTS.get(filters.sort, UNIT_SORTS["iou"])[1]
    images = UnitImage.objects.order_by("rank")
    if thumbnails is not None:
        images = images.filter(rank__lt=thumbnails)
    return units.order_by("layer", *ordering).prefetch_related(Prefetch("images", queryset=images))


def run_categories(*, run: DissectionRun, layer: str) -> list[str]:
    """The concept categories the units of a layer carry (the category filter's choices)."""
    return list(
        run.units.filter(layer=layer)
        .exclude(concept_category="")
        .order_by("concept_category")
        .values_list("concept_category", flat=True)
        .distinct()
    )


@dataclass(frozen=True)
class CategoryCount:
    """One concept category of a layer: labelled units, interpretable units (detectors), unique concepts
    among those."""

    category: str
    units: int
    interpretable: int
    concepts: int


@dataclass(frozen=True)
class LayerSummary:
    layer: str
    units: int
    interpretable: int
    concepts: int
    categories: list[CategoryCount]

    @property
    def most(self) -> int:
        """The largest category's unit count: the chart's scale."""
        return max((row.units for row in self.categories), default=0)


def run_layer_summary(*, run: DissectionRun, layer: str) -> LayerSummary:
    """Units per concept category and unique concepts of one layer (the CVPR 2017 summary), from the
    database in two queries."""
    units = run.units.filter(layer=layer)
    rows = (
        units.exclude(label="")
        .values("concept_category")
        .annotate(
            n=Count("id"),
            detectors=Count("id", filter=Q(interpretable=True)),
            concepts=Count("label", filter=Q(interpretable=True), distinct=True),
        )
        .order_by("-detectors", "-n", "concept_category")
    )
    totals = units.aggregate(
        n=Count("id"),
        detectors=Count("id", filter=Q(interpretable=True)),
        concepts=Count("label", filter=Q(interpretable=True), distinct=True),
    )
    return LayerSummary(
        layer=layer,
        units=totals["n"],
        interpretable=totals["detectors"],
        concepts=totals["concepts"],
        categories=[
            CategoryCount(row["concept_category"] or "none", row["n"], row["detectors"], row["concepts"])
            for row in rows
        ],
    )


def run_cam_gallery(*, run: DissectionRun) -> list[dict[str, Any]]:
    """The CAM gallery entries with overlay URLs, or [] when none was built."""
    key = run.report.get("cam")
    if not key or not default_storage.exists(key):
        return []
    with default_storage.open(key, "rb") as handle:
        entries = json.load(handle)
    layers = {entry["layer"] for entry in entries}
    unit_ids = {
        (layer, channel): pk
        for pk, layer, channel in run.units.filter(layer__in=layers).values_list("pk", "layer", "channel")
    }
    for entry in entries:
        entry["overlay_url"] = default_storage.url(entry["overlay"])
        for unit in entry["units"]:
            unit["unit_id"] = unit_ids.get((entry["layer"], unit["channel"]))
    return entries


def networks_overview(*, user: Any) -> QuerySet[Network]:
    return Network.objects.visible_to(user).select_related("project", "base").order_by("name")


def probe_sets_overview(*, user: Any) -> QuerySet[ProbeSet]:
    return ProbeSet.objects.visible_to(user).select_related("project").order_by("name")


def runs_overview(*, user: Any) -> QuerySet[DissectionRun]:
    return (
        DissectionRun.objects.visible_to(user)
        .select_related("network", "probe_set", "project")
        .annotate(unit_count=Count("units"))
        .order_by("-created_at")
    )


_RUN_ID = re.compile(r"[0-9]+")


def media_key_visible(*, user: Any, key: str) -> bool:
    """Whether `user` may read the stored file `key`: a run's files (`runs/<run id>/...`, imported unit
    images under `units/<run id>/...`) and a network's uploads (`networks/...`) go to the members of the
    owner's project; any other key, or one that is not a plain relative path, to nobody."""
    parts = key.split("/")
    if "\\" in key or any(part in ("", ".", "..") for part in parts):
        return False
    if parts[0] in ("runs", "units") and len(parts) >= 3 and _RUN_ID.fullmatch(parts[1]):
        return DissectionRun.objects.visible_to(user).filter(pk=int(parts[1])).exists()
    if parts[0] == "networks":
        return Network.objects.visible_to(user).filter(Q(weights=key) | Q(torchscript=key)).exists()
    return False


def run_layers(*, run: DissectionRun) -> list[str]:
    """The layers that hold units (an imported run's layers come from its unit folders)."""
    return list(run.units.order_by("layer").values_list("layer", flat=True).distinct())


def run_waits_for_broker(*, run: DissectionRun) -> bool:
    """Whether some pending shard of an active run was never taken by the broker (it was down)."""
    return (
        run.status in (DissectionRun.Status.QUEUED, DissectionRun.Status.RUNNING)
        and run.shards.filter(status="pending", queued_at__isnull=True).exists()
    )


def runs_compared(*, runs: Sequence[DissectionRun], workdir: Path) -> list[LoadedRun]:
    """The stored results of finished runs, ready for `dissection.compare`: each rendered layer's result.json
    and the unit strips beside it, read from storage (copied into `workdir` when the storage is not a local
    folder, e.g. S3)."""
    loaded = []
    for run in runs:
        layers, folders = {}, {}
        for layer in run.layers:
            report = run.report.get(layer)
            if not report:
                continue
            prefix = str(PurePosixPath(report).parent)
            folder = _local_folder(prefix, workdir / str(run.pk) / layer)
            layers[layer] = json.loads((folder / "result.json").read_text())
            folders[layer] = folder
        loaded.append(LoadedRun(_compare_spec(run, workdir / str(run.pk)), layers, folders))
    return loaded


def runs_compare_url(*, runs: Sequence[DissectionRun]) -> str:
    """The comparison page of `runs`, in this order."""
    return f"{reverse('runs:run_compare')}?{urlencode([('run', run.pk) for run in runs])}"


def _compare_spec(run: DissectionRun, folder: Path) -> RunSpec:
    """A run's name, its network's training step, and tags naming the network, its architecture and the
    network it is a version of."""
    network = run.network
    if network is None:
        return RunSpec(run.name, folder)
    tags = {"network": network.name, "architecture": network.architecture}
    if network.base is not None:
        tags["base"] = network.base.name
    return RunSpec(run.name, folder, step=network.step, tags=tags)


def compare_unit_ids(*, runs: Sequence[DissectionRun]) -> dict[tuple[str, str, int], int]:
    """The stored units of the compared runs by (run name, layer, channel), for links to their pages."""
    names = {run.pk: run.name for run in runs}
    rows = Unit.objects.filter(run__in=list(names)).values_list("pk", "run_id", "layer", "channel")
    return {(names[run_id], layer, channel): pk for pk, run_id, layer, channel in rows}


def _local_folder(prefix: str, copy_to: Path) -> Path:
    """A local folder holding `prefix`'s result.json and strips: the stored folder itself on local disk."""
    try:
        local = Path(default_storage.path(prefix))
    except NotImplementedError:
        local = None
    if local is not None and (local / "result.json").is_file():
        return local
    copy_to.mkdir(parents=True, exist_ok=True)
    with default_storage.open(f"{prefix}/result.json", "rb") as handle:
        document = json.load(handle)
    (copy_to / "result.json").write_text(json.dumps(document))
    for unit in document["units"]:
        if unit.get("strip") and default_storage.exists(f"{prefix}/{unit['strip']}"):
            fetch(f"{prefix}/{unit['strip']}", copy_to / unit["strip"])
    return copy_to


@dataclass(frozen=True)
class JobView:
    job: Job
    percent: int
    eta: str


def jobs_overview(*, user: Any) -> list[JobView]:
    """The jobs a requester waits for or should see failed, oldest first, each with its share done and an ETA
    from the rate so far; done jobs show only while others still run (the demo's extras as they land)."""
    jobs = list(Job.objects.visible_to(user).select_related("project").order_by("created_at"))
    if not any(job.status in (Job.Status.QUEUED, Job.Status.RUNNING, Job.Status.FAILED) for job in jobs):
        return []
    now = timezone.now()
    views = []
    for job in jobs:
        if job.status == Job.Status.RUNNING:
            fraction = job.done / job.total if job.total else 0.0
            elapsed = (now - job.started_at).total_seconds() if job.started_at else 0.0
            eta = eta_display(run_eta_seconds(progress=fraction, elapsed_s=elapsed))
        else:
            eta = ""
        views.append(JobView(job, job.percent, eta))
    return views
