"""Writes for dissection runs: register networks and probe sets, launch and cancel runs, and the state
transitions of a run's shards that workers call (start, progress, complete, advance, publish, fail).

A run is a map-reduce: `scan` shards over slices of the probe set, then `tally` shards over the same slices,
then one `render` shard per layer, then `run_publish`. Whoever completes the last shard of a phase advances the
run (`run_advance`, idempotent: the next phase's shard rows are unique); every transition locks the run row.
Tasks are enqueued only after their rows commit (`transaction.on_commit`), and carry ids, never objects.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from annotate.errors import AnnotateError
from annotate.models import DissectionRun, Network, ProbeSet, Shard, Unit, UnitImage

logger = logging.getLogger(__name__)

Status = DissectionRun.Status
Phase = Shard.Phase
ACTIVE = (Status.QUEUED, Status.RUNNING)
PROGRESS_INTERVAL_S = 0.5


class RunError(AnnotateError):
    """A network, probe set or run that cannot be registered or launched (message names the field)."""


class RunStopped(Exception):
    """Raised inside a shard when its run was cancelled or failed meanwhile: the worker drops the shard."""


# --- registration ------------------------------------------------------------------------------------------

def network_register(*, name: str, architecture: str, weights: File | None = None,
                     torchscript: File | None = None) -> Network:
    """A network from an architecture name plus a state-dict checkpoint, or from a TorchScript file.

    The model is loaded once here so that a bad file is refused at registration, naming the file."""
    from dissection.errors import DissectionError

    name, architecture = name.strip(), architecture.strip()
    if not name:
        raise RunError("Name: a network needs a name.")
    if Network.objects.filter(name=name).exists():
        raise RunError(f"Name: a network called {name!r} exists already.")
    if (weights is None) == (torchscript is None):
        raise RunError("Files: give either a weights file (with its architecture) or a TorchScript file.")
    if weights is not None and not architecture:
        raise RunError("Architecture: name the architecture of the weights, e.g. toy or resnet18.")
    network = Network(name=name, architecture=architecture or "torchscript")
    with transaction.atomic():
        if weights is not None:
            network.weights.save(Path(weights.name).name, weights, save=False)
        if torchscript is not None:
            network.torchscript.save(Path(torchscript.name).name, torchscript, save=False)
        try:
            _load_network(network)
        except DissectionError as exc:
            for field in (network.weights, network.torchscript):
                if field:
                    field.delete(save=False)
            raise RunError(f"Network: {exc}") from None
        network.save()
    return network


def _load_network(network: Network) -> Any:
    from dissection.models import load_model

    from workers.files import local_copy

    if network.torchscript:
        return load_model(torchscript=local_copy(network.torchscript))
    return load_model(network.architecture, weights=local_copy(network.weights) if network.weights else None)


def probe_set_register(*, name: str, path: str) -> ProbeSet:
    """A Broden-format probe set from a local folder (shared by the workers) or an s3://bucket/prefix."""
    from dissection.errors import DissectionError

    from workers.files import probe_set_root

    name, path = name.strip(), path.strip()
    if not name:
        raise RunError("Name: a probe set needs a name.")
    if ProbeSet.objects.filter(name=name).exists():
        raise RunError(f"Name: a probe set called {name!r} exists already.")
    if not path:
        raise RunError("Path: give a folder or an s3://bucket/prefix.")
    if not path.startswith("s3://"):
        path = str(Path(path).expanduser().resolve())
    probe_set = ProbeSet(name=name, path=path)
    try:
        from dissection.broden import load_probe_set

        probe = load_probe_set(probe_set_root(probe_set))
    except DissectionError as exc:
        raise RunError(f"Path: {exc}") from None
    probe_set.image_count = len(probe)
    probe_set.save()
    return probe_set


def _lock_run(run_id: int) -> DissectionRun:
    """Lock the run row for this transaction and return it. The lock is taken by a write, so that SQLite
    (whose SELECT ... FOR UPDATE is a no-op) also serializes writers here instead of failing an upgrade."""
    DissectionRun.objects.select_for_update().filter(pk=run_id).update(status=F("status"))
    return DissectionRun.objects.get(pk=run_id)


# --- launch and cancel -------------------------------------------------------------------------------------

def _enqueue(shard_ids: Sequence[int]) -> None:
    from workers.tasks import dissect_shard

    for shard_id in shard_ids:
        dissect_shard.delay(shard_id)


def run_launch(*, name: str, network: Network, probe_set: ProbeSet, layers: Sequence[str],
               shard_size: int = 64, topk: int = 20, semantics: str = "paper", created_by: Any = None
               ) -> DissectionRun:
    """A queued run with its scan shards (slices of `shard_size` images); they are enqueued on commit."""
    from dissection.engine import SEMANTICS
    from dissection.errors import DissectionError
    from dissection.hooks import resolve_layer

    name = name.strip()
    layers = list(dict.fromkeys(layer.strip() for layer in layers if layer.strip()))
    if not name:
        raise RunError("Name: a run needs a name.")
    if DissectionRun.objects.filter(name=name).exists():
        raise RunError(f"Name: a run called {name!r} exists already.")
    if not layers:
        raise RunError("Layers: name at least one layer to dissect.")
    if semantics not in SEMANTICS:
        raise RunError(f"Semantics: {semantics!r} is not one of {', '.join(SEMANTICS)}.")
    if shard_size < 1 or topk < 1:
        raise RunError("Shard size and top-k must be positive.")
    if probe_set.image_count < 1:
        raise RunError(f"Probe set: {probe_set.name!r} holds no images.")
    try:
        model = _load_network(network)
        for layer in layers:
            resolve_layer(model, layer)
    except DissectionError as exc:
        raise RunError(f"Layers: {exc}") from None
    count = math.ceil(probe_set.image_count / shard_size)
    with transaction.atomic():
        run = DissectionRun.objects.create(
            name=name, network=network, probe_set=probe_set, layers=layers, semantics=semantics, topk=topk,
            shards_total=2 * count + len(layers), created_by=created_by)
        Shard.objects.bulk_create([
            Shard(run=run, phase=Phase.SCAN, index=i, start=i * shard_size,
                  stop=min((i + 1) * shard_size, probe_set.image_count))
            for i in range(count)
        ])
        ids = list(Shard.objects.filter(run=run).order_by("index").values_list("pk", flat=True))
        transaction.on_commit(lambda: _enqueue(ids))
    return run


def run_cancel(*, run: DissectionRun) -> DissectionRun:
    """Stop a queued or running run: its shards are dropped when a worker picks or reports them, and no
    units are published."""
    with transaction.atomic():
        locked = _lock_run(run.pk)
        if locked.status not in ACTIVE:
            raise RunError(f"A {locked.get_status_display().lower()} run cannot be cancelled.")
        locked.status = Status.CANCELLED
        locked.eta_seconds = None
        locked.finished_at = timezone.now()
        locked.save(update_fields=["status", "eta_seconds", "finished_at"])
    return locked


def run_fail(*, run_id: int, error: str) -> None:
    """Mark an active run failed with `error` (the first error wins; a cancelled run stays cancelled)."""
    with transaction.atomic():
        DissectionRun.objects.select_for_update().filter(pk=run_id, status__in=ACTIVE).update(
            status=Status.FAILED, error=error[:5000], eta_seconds=None, finished_at=timezone.now())


# --- shard transitions (called by workers) -----------------------------------------------------------------

@dataclass(frozen=True)
class ShardWork:
    """What a worker needs to compute one shard (plain values, read under the run's lock)."""

    shard_id: int
    run_id: int
    phase: str
    layer: str
    index: int
    start: int
    stop: int
    done: bool


def shard_start(*, shard_id: int) -> ShardWork | None:
    """Count a delivery and mark the run running; None when the shard must not run (run stopped, or too many
    deliveries: then the run fails). A shard already done comes back with `done` set."""
    run_id = Shard.objects.values_list("run_id", flat=True).get(pk=shard_id)
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status not in ACTIVE:
            return None
        shard = Shard.objects.select_for_update().get(pk=shard_id)
        work = ShardWork(shard.pk, run.pk, shard.phase, shard.layer, shard.index, shard.start, shard.stop,
                         shard.status == Shard.Status.DONE)
        if work.done:
            return work
        shard.deliveries += 1
        if shard.deliveries > settings.SHARD_MAX_DELIVERIES:
            run.status, run.finished_at, run.eta_seconds = Status.FAILED, timezone.now(), None
            run.error = (f"{shard_title(shard)} was delivered {shard.deliveries} times (its worker died each "
                         f"time; limit SHARD_MAX_DELIVERIES={settings.SHARD_MAX_DELIVERIES})")
            run.save(update_fields=["status", "finished_at", "eta_seconds", "error"])
            shard.save(update_fields=["deliveries", "updated_at"])
            return None
        shard.status = Shard.Status.RUNNING
        shard.save(update_fields=["deliveries", "status", "updated_at"])
        if run.status == Status.QUEUED:
            run.status, run.started_at = Status.RUNNING, timezone.now()
            run.save(update_fields=["status", "started_at"])
    return work


def shard_title(shard: Shard | ShardWork) -> str:
    """How errors name a shard: "scan shard 1 (images 48-95)" or "render shard of layer 'conv4'"."""
    if shard.phase == Phase.RENDER:
        return f"render shard of layer {shard.layer!r}"
    return f"{shard.phase} shard {shard.index} (images {shard.start}-{shard.stop - 1})"


def shard_progress_reporter(*, work: ShardWork) -> Callable[[int, int], None]:
    """A `progress(done, total)` callback for the engine: raises RunStopped once the run is no longer active,
    and at most every PROGRESS_INTERVAL_S writes the shard's fraction and the run's % and ETA."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        status = DissectionRun.objects.filter(pk=work.run_id).values_list("status", flat=True).first()
        if status not in ACTIVE:
            raise RunStopped(f"run {work.run_id} is {status}")
        now = time.monotonic()
        if now - last[0] < PROGRESS_INTERVAL_S and done < total:
            return
        last[0] = now
        Shard.objects.filter(pk=work.shard_id, status=Shard.Status.RUNNING).update(
            progress=min(1.0, done / max(total, 1)))
        _run_update_progress(work.run_id)

    return report


def _run_update_progress(run_id: int) -> None:
    run = DissectionRun.objects.filter(pk=run_id).only("shards_total", "started_at", "status").first()
    if run is None or run.status not in ACTIVE or not run.shards_total:
        return
    done = Shard.objects.filter(run_id=run_id).aggregate(total=Sum("progress"))["total"] or 0.0
    progress = min(0.999, done / run.shards_total)
    eta = None
    if run.started_at and progress > 0.01:
        elapsed = (timezone.now() - run.started_at).total_seconds()
        eta = int(elapsed * (1 - progress) / progress)
    DissectionRun.objects.filter(pk=run_id, status__in=ACTIVE).update(progress=progress, eta_seconds=eta)


def shard_release(*, work: ShardWork) -> None:
    """A shard given up (its run stopped, or it failed) goes back to pending, with nothing recorded."""
    Shard.objects.filter(pk=work.shard_id, status=Shard.Status.RUNNING).update(status=Shard.Status.PENDING,
                                                                                progress=0.0)


def shard_complete(*, work: ShardWork, result_keys: dict[str, str]) -> bool:
    """Record a computed shard once; False when it was already done (a repeated delivery never counts twice)."""
    with transaction.atomic():
        _lock_run(work.run_id)
        shard = Shard.objects.select_for_update().get(pk=work.shard_id)
        if shard.status == Shard.Status.DONE:
            return False
        shard.status, shard.progress, shard.result_keys = Shard.Status.DONE, 1.0, result_keys
        shard.save(update_fields=["status", "progress", "result_keys", "updated_at"])
        DissectionRun.objects.filter(pk=work.run_id).update(shards_done=F("shards_done") + 1)
    _run_update_progress(work.run_id)
    return True


def phase_complete(*, run_id: int, phase: str) -> bool:
    """Whether every shard of `phase` is done (render: every layer of the run)."""
    shards = Shard.objects.filter(run_id=run_id, phase=phase)
    expected = len(DissectionRun.objects.get(pk=run_id).layers) if phase == Phase.RENDER else shards.count()
    return shards.count() == expected and not shards.exclude(status=Shard.Status.DONE).exists()


def phase_results(*, run_id: int, phase: str) -> list[dict[str, str]]:
    """The result keys of a phase's shards, in shard order."""
    return [shard.result_keys for shard in Shard.objects.filter(run_id=run_id, phase=phase).order_by("layer", "index")]


NEXT_PHASE = {Phase.SCAN: Phase.TALLY, Phase.TALLY: Phase.RENDER}


def run_advance(*, run_id: int, phase: str, prepare: Callable[[], None]) -> list[int]:
    """Create the shards of the phase after `phase` once, and enqueue them on commit; returns their ids.

    `prepare()` (merging the finished phase's states into deterministic keys) runs under the run's lock, so
    concurrent finishers of the last shard prepare and create the next phase exactly once."""
    with transaction.atomic():
        run = _lock_run(run_id)
        nxt = NEXT_PHASE[Phase(phase)]
        if run.status not in ACTIVE or Shard.objects.filter(run_id=run_id, phase=nxt).exists():
            return []
        prepare()
        if nxt == Phase.TALLY:
            rows = [Shard(run=run, phase=nxt, index=s.index, start=s.start, stop=s.stop)
                    for s in Shard.objects.filter(run_id=run_id, phase=Phase.SCAN).order_by("index")]
        else:
            rows = [Shard(run=run, phase=nxt, layer=layer, index=0) for layer in run.layers]
        Shard.objects.bulk_create(rows)
        ids = list(Shard.objects.filter(run_id=run_id, phase=nxt).order_by("layer", "index")
                   .values_list("pk", flat=True))
        transaction.on_commit(lambda: _enqueue(ids))
    return ids


@dataclass(frozen=True)
class PublishedLayer:
    """One rendered layer: its result.json document and where its files lie in storage."""

    layer: str
    document: dict[str, Any]
    prefix: str  # storage key of the layer folder; tiles are prefix + "/" + the document's tile path


def run_publish(*, run_id: int, layers: Sequence[PublishedLayer]) -> bool:
    """Write every unit and unit image of the run and mark it done, all in one transaction (so no run shows
    half-written units); idempotent: a repeated publish of an active run replaces the same rows, one of a done
    run changes nothing. False when the run is no longer active (cancelled or failed meanwhile)."""
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status == Status.DONE:
            return True
        if run.status not in ACTIVE:
            return False
        # Before `done` no batch can hold these units, so replacing them keeps a repeated publish exact.
        Unit.objects.filter(run=run, layer__in=[p.layer for p in layers]).delete()
        for published in layers:
            units = Unit.objects.bulk_create([
                Unit(run=run, layer=published.layer, index=entry["channel"], label=entry["label"][:200],
                     category=entry["category"][:50], iou=entry["iou"], interpretable=entry["interpretable"],
                     threshold=entry["threshold"], top_concepts=entry["concepts"])
                for entry in published.document["units"]
            ])
            by_index = {unit.index: unit for unit in units}
            UnitImage.objects.bulk_create([
                UnitImage(unit=by_index[entry["channel"]], rank=rank, image=f"{published.prefix}/{image['tile']}",
                          max_activation=image["activation"], source_image=image["image"])
                for entry in published.document["units"] for rank, image in enumerate(entry["images"])
            ])
        run.report = {**run.report, **{p.layer: f"{p.prefix}/report.html" for p in layers}}
        run.status, run.progress, run.eta_seconds, run.finished_at = Status.DONE, 1.0, None, timezone.now()
        run.save(update_fields=["report", "status", "progress", "eta_seconds", "finished_at"])
    return True


def run_set_report(*, run_id: int, key: str, value: Any) -> None:
    """Add one entry (e.g. the CAM gallery) to the run's report map."""
    with transaction.atomic():
        run = _lock_run(run_id)
        run.report = {**run.report, key: value}
        run.save(update_fields=["report"])


def cam_gallery_request(*, run: DissectionRun, images: int = 8) -> None:
    """Enqueue (after commit) the CAM gallery of a finished run."""
    if run.status != Status.DONE or run.network_id is None:
        raise RunError("A CAM gallery needs a finished dissection run of a network.")
    from workers.tasks import cam_gallery

    transaction.on_commit(lambda: cam_gallery.delay(run.pk, images))
