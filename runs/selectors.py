"""Reads for dissection runs: what the run pages and the status endpoint show."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from django.core.files.storage import default_storage
from django.db.models import Count, Q, QuerySet
from django.urls import reverse

from dissection.compare import LoadedRun, RunSpec
from runs.models import DissectionRun, Network, ProbeSet, Unit
from runs.storage import fetch


def run_status(*, run: DissectionRun) -> dict[str, Any]:
    """The JSON the run page polls: status, progress (0..1), ETA, error, shard counts."""
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "progress": round(run.progress, 4),
        "percent": int(run.progress * 100),
        "eta_seconds": run.eta_seconds,
        "error": run.error,
        "shards_done": run.shards_done,
        "shards_total": run.shards_total,
        "waits_for_broker": run_waits_for_broker(run=run),
        "finished": run.status
        in (DissectionRun.Status.DONE, DissectionRun.Status.FAILED, DissectionRun.Status.CANCELLED),
    }


def run_reports(*, run: DissectionRun) -> list[tuple[str, str]]:
    """(layer, URL of its report.html) for every rendered layer of a finished run. Always through the media
    view, even on S3: it serves the report with a no-script policy, and the strips the report links to
    relatively come through it too (a private bucket answers unsigned links with 403)."""
    return [
        (layer, reverse("runs:media", args=[run.report[layer]]))
        for layer in run.layers
        if layer in run.report
    ]


def run_units(*, run: DissectionRun) -> QuerySet[Unit]:
    return run.units.prefetch_related("images").order_by("layer", "-iou", "channel")


def run_cam_gallery(*, run: DissectionRun) -> list[dict[str, Any]]:
    """The CAM gallery entries with overlay URLs, or [] when none was built."""
    key = run.report.get("cam")
    if not key or not default_storage.exists(key):
        return []
    with default_storage.open(key, "rb") as handle:
        entries = json.load(handle)
    for entry in entries:
        entry["overlay_url"] = default_storage.url(entry["overlay"])
    return entries


def networks_overview(*, user: Any) -> QuerySet[Network]:
    return Network.objects.visible_to(user).select_related("project").order_by("name")


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
        loaded.append(LoadedRun(RunSpec(run.name, workdir / str(run.pk)), layers, folders))
    return loaded


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
