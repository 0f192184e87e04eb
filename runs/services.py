"""Writes for dissection runs: register networks and probe sets, launch and cancel runs, import units, and
the state transitions of a run's shards (start, progress, complete, publish, fail).

A run is a pipeline of shard rows: `scan` shards over slices of the probe set, one `merge_scan`, `tally`
shards over the same slices, one `merge_tally`, one `render` per layer, one `publish`. Completing the last
shard of a phase creates the next phase's rows in the same transaction, so a run advances exactly once however
many workers finish together. Every transition locks the run row and does no storage I/O while it holds it;
tasks are enqueued only after their rows commit (`transaction.on_commit`) and carry ids, never objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from dissection.errors import DissectionError
from runs.access import is_requester, may_use_project
from runs.audit import audit_event_record
from runs.errors import ImportUnitsError, RunError, RunStopped
from runs.models import (
    ApiToken,
    AuditEvent,
    DissectionRun,
    Job,
    Network,
    ProbeSet,
    Project,
    Readiness,
    Shard,
    Unit,
    UnitImage,
)
from runs.selectors import run_eta_seconds

logger = logging.getLogger(__name__)

Status = DissectionRun.Status
Phase = Shard.Phase
ACTIVE = (Status.QUEUED, Status.RUNNING)
PROGRESS_INTERVAL_S = 0.5
Registered = TypeVar("Registered", Network, ProbeSet)
NEXT_PHASE = {
    Phase.SCAN: Phase.MERGE_SCAN,
    Phase.MERGE_SCAN: Phase.TALLY,
    Phase.TALLY: Phase.MERGE_TALLY,
    Phase.MERGE_TALLY: Phase.RENDER,
    Phase.RENDER: Phase.PUBLISH,
}


# --- projects ----------------------------------------------------------------------------------------------

DEFAULT_PROJECT = "Default"


def project_get_or_create(*, name: str = DEFAULT_PROJECT) -> Project:
    """The project called `name`, made without members when missing (the commands' `--project`): members
    are added in the admin."""
    name = name.strip()
    if not name:
        raise RunError("Project: a project needs a name.")
    project, _ = Project.objects.get_or_create(name=name)
    return project


def _check_project(project: Project, created_by: Any) -> None:
    """Refuse a project the creator is not a member of (the superuser may use any)."""
    if not may_use_project(created_by, project):
        raise RunError(f"Project: you are not a member of project {project.name!r}.")


# --- registration ------------------------------------------------------------------------------------------


def _name_free(model: type[Network] | type[ProbeSet], name: str, what: str, project: Project) -> None:
    """Refuse a taken name; a registration of the same project that failed its check gives its name back."""
    existing = model.objects.filter(name=name).first()
    if existing is None:
        return
    if existing.status != Readiness.FAILED or existing.runs.exists() or existing.project_id != project.pk:
        raise RunError(f"Name: a {what} called {name!r} exists already.")
    if isinstance(existing, Network):
        _network_delete_files(existing)
    existing.delete()


def _network_delete_files(network: Network) -> None:
    for field in (network.weights, network.torchscript):
        if field:
            field.delete(save=False)


def network_register(
    *,
    project: Project,
    name: str,
    architecture: str,
    weights: File | None = None,
    torchscript: File | None = None,
    step: int | None = None,
    base: Network | None = None,
    kind: str = Network.Kind.CLASSIFIER,
    concepts: Sequence[dict[str, Any]] | None = None,
    latent_shape: Sequence[int] | None = None,
    inspect_now: bool = False,
    created_by: Any = None,
) -> Network:
    """A network of `project` from an architecture name plus a state-dict checkpoint, or from a TorchScript
    file; `created_by` must be a member of the project (checked, not stored).

    The model is loaded once, to refuse a bad file and to record its layer names: by a worker (the page
    returns at once, the network shows "being checked") or, with `inspect_now`, here (the command line),
    where a bad file raises RunError and leaves nothing behind. A checkpoint or a fine-tuned copy names its
    training `step` and the `base` network it is a version of (of the same project).

    A `generator` (latent batch to N x 3 x H x W images; TorchScript with its `latent_shape`, or a toy
    generator checkpoint, architecture toy-generator) is dissected with a `segmenter` (images to per-pixel
    class scores; TorchScript with its `concepts`, one {"name", "category"} per output class in order, or a
    toy segmenter checkpoint, architecture toy-segmenter, which holds its own)."""
    _check_project(project, created_by)
    kind = kind or Network.Kind.CLASSIFIER
    if kind not in Network.Kind.values:
        raise RunError(f"Kind: {kind!r} is not one of {', '.join(Network.Kind.values)}.")
    concepts = _check_concepts(concepts or [])
    latent = [int(d) for d in latent_shape or []]
    if any(d < 1 for d in latent):
        raise RunError(f"Latent shape: {latent} must be positive sizes, e.g. 512.")
    if kind == Network.Kind.GENERATOR and torchscript is not None and not latent:
        raise RunError("Latent shape: a TorchScript generator needs its latent shape, e.g. 512 or 512,1,1.")
    if kind == Network.Kind.SEGMENTER and torchscript is not None and not concepts:
        raise RunError("Concepts: a TorchScript segmenter needs its concepts file (name,category per class).")
    if kind != Network.Kind.SEGMENTER and concepts:
        raise RunError("Concepts: only a segmenter has concepts.")
    if base is not None and base.project_id != project.pk:
        raise RunError(f"Base: network {base.name!r} is not in project {project.name!r}.")
    if step is not None and step < 0:
        raise RunError("Step: a training step is 0 or more.")
    name, architecture = name.strip(), architecture.strip()
    if not name:
        raise RunError("Name: a network needs a name.")
    if (weights is None) == (torchscript is None):
        raise RunError("Files: give either a weights file (with its architecture) or a TorchScript file.")
    if weights is not None and not architecture:
        raise RunError("Architecture: name the architecture of the weights, e.g. toy or resnet18.")
    with transaction.atomic():
        _name_free(Network, name, "network", project)
        network = Network(
            project=project,
            name=name,
            architecture=architecture or "torchscript",
            step=step,
            base=base,
            kind=kind,
            concepts=concepts,
            latent_shape=latent,
            status=Readiness.PENDING,
        )
        if weights is not None:
            network.weights.save(Path(weights.name or "weights.pt").name, weights, save=False)
        if torchscript is not None:
            network.torchscript.save(Path(torchscript.name or "model.pt").name, torchscript, save=False)
        network.save()
    _check(network, now=inspect_now, field="Network")
    return network


def network_inspect(*, network_id: int) -> None:
    """Load the network once and record its layer names (a segmenter: its concepts), or the reason it cannot
    be loaded."""
    from runs.networks import network_layers, network_token_layers, segmenter_concepts

    def measure(network: Network) -> dict[str, Any]:
        if network.kind == Network.Kind.SEGMENTER:
            return {"layers": [], "concepts": segmenter_concepts(network)}
        return {"layers": network_layers(network), "token_layers": network_token_layers(network)}

    _record_check(Network, network_id, measure, {"layers": []})


def _check_concepts(concepts: Sequence[Any]) -> list[dict[str, str]]:
    """A segmenter's concepts as stored: {"name", "category"} per output class, at least one categorized."""
    checked = []
    for row, concept in enumerate(concepts, start=1):
        if not isinstance(concept, dict) or not str(concept.get("name") or "").strip():
            raise RunError(f"Concepts: class {row} needs a name.")
        category = str(concept.get("category") or "").strip()
        checked.append({"name": str(concept["name"]).strip(), "category": category})
    if checked and not any(c["category"] for c in checked):
        raise RunError("Concepts: no class has a category, so there is no concept to label.")
    return checked


def segmenter_concepts_read(*, data: bytes, filename: str) -> list[dict[str, str]]:
    """A segmenter's concepts file: classes.csv (`name,category`, one row per output class in order) or a
    JSON list of {"name", "category"} (or [name, category] pairs)."""
    import csv
    import io

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RunError(f"Concepts: {filename} is not UTF-8 text.") from None
    if filename.lower().endswith(".json") or text.lstrip().startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise RunError(f"Concepts: {filename} is not valid JSON ({exc}).") from None
        if not isinstance(parsed, list):
            raise RunError(f"Concepts: {filename} must hold a JSON list of classes.")
        rows = [
            {"name": item[0], "category": item[1]} if isinstance(item, list) and len(item) == 2 else item
            for item in parsed
        ]
        return _check_concepts(rows)
    reader = csv.DictReader(io.StringIO(text))
    missing = [f for f in ("name", "category") if f not in (reader.fieldnames or [])]
    if missing:
        raise RunError(f"Concepts: {filename}'s header lacks column(s) {', '.join(missing)}.")
    rows = []
    for number, row in enumerate(reader, start=2):
        if not (row.get("name") or "").strip():
            raise RunError(f"Concepts: {filename} row {number}: the class needs a name.")
        rows.append({"name": row["name"], "category": row.get("category") or ""})
    if not rows:
        raise RunError(f"Concepts: {filename} lists no class.")
    return _check_concepts(rows)


def probe_set_register(
    *,
    project: Project,
    name: str,
    path: str,
    source_format: str = ProbeSet.Format.BRODEN,
    segmenter: Network | None = None,
    image_size: int | None = None,
    inspect_now: bool = False,
    created_by: Any = None,
) -> ProbeSet:
    """A Broden-format probe set of `project` from a local folder (shared by the workers) or an
    s3://bucket/prefix; `created_by` must be a member of the project (checked, not stored).

    Reading it (and downloading an S3 prefix) is a worker's job, as for networks; `inspect_now` does it
    here. A dataset in another `source_format` (`ProbeSet.Format`) is a `path` inside PROBE_SET_SOURCE_ROOT
    that a worker converts (`probe_set_convert`) at `image_size` (masks at half of it), with a Job showing
    its progress; images labelled by a segmenter need the registered `segmenter` network."""
    _check_project(project, created_by)
    name, path = name.strip(), path.strip()
    if not name:
        raise RunError("Name: a probe set needs a name.")
    if not path:
        raise RunError("Path: give a folder or an s3://bucket/prefix.")
    source_format = source_format or ProbeSet.Format.BRODEN
    if source_format not in ProbeSet.Format.values:
        raise RunError(f"Format: {source_format!r} is not one of {', '.join(ProbeSet.Format.values)}.")
    if source_format != ProbeSet.Format.BRODEN:
        return _probe_set_register_source(
            project=project,
            name=name,
            path=path,
            source_format=source_format,
            segmenter=segmenter,
            image_size=image_size or 224,
            inspect_now=inspect_now,
        )
    if segmenter is not None:
        raise RunError("Segmenter: only images labelled by a segmenter take one.")
    if not path.startswith("s3://"):
        path = str(Path(path).expanduser().resolve())
    with transaction.atomic():
        _name_free(ProbeSet, name, "probe set", project)
        probe_set = ProbeSet.objects.create(project=project, name=name, path=path, status=Readiness.PENDING)
    _check(probe_set, now=inspect_now, field="Path")
    return probe_set


MAX_CONVERT_SIZE = 1024
"""The largest image side a conversion writes."""


def _source_path(path: str) -> Path:
    """A dataset path (relative to PROBE_SET_SOURCE_ROOT, or absolute inside it) resolved inside that root;
    anything else is refused: the web form must not read the server's other files."""
    from runs.storage import inside

    root = Path(settings.PROBE_SET_SOURCE_ROOT).resolve()
    given = Path(path).expanduser()
    if given.is_absolute():
        resolved = given.resolve()
        relative = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else "/"
    else:
        relative = path.rstrip("/")
    try:
        source = inside(root, relative, what=path)
    except DissectionError:
        raise RunError(
            f"Path: {path} is not inside the data folder {root} (PROBE_SET_SOURCE_ROOT); give a path in it."
        ) from None
    if not source.exists():
        raise RunError(f"Path: {path} does not exist in the data folder {root}.")
    return source


def _probe_set_register_source(
    *,
    project: Project,
    name: str,
    path: str,
    source_format: str,
    segmenter: Network | None,
    image_size: int,
    inspect_now: bool,
) -> ProbeSet:
    source = _source_path(path)
    if not 8 <= image_size <= MAX_CONVERT_SIZE:
        raise RunError(f"Image size: {image_size} px is not between 8 and {MAX_CONVERT_SIZE}.")
    if (source_format == ProbeSet.Format.SEGMENTED) != (segmenter is not None):
        raise RunError("Segmenter: images labelled by a segmenter need one (and only they take one).")
    if segmenter is not None:
        if segmenter.project_id != project.pk or segmenter.kind != Network.Kind.SEGMENTER:
            raise RunError(f"Segmenter: {segmenter.name} is not a segmenter of project {project.name}.")
        _check_ready(segmenter, "Segmenter")
    with transaction.atomic():
        _name_free(ProbeSet, name, "probe set", project)
        probe_set = ProbeSet.objects.create(
            project=project,
            name=name,
            path="",
            status=Readiness.PENDING,
            source_format=source_format,
            source={
                "path": str(source),
                "image_size": image_size,
                "segmenter": segmenter.pk if segmenter else None,
            },
        )
        Job.objects.update_or_create(
            project=project,
            key=_convert_key(probe_set),
            defaults={"title": f"Convert probe set {name} ({source_format})", "status": Job.Status.QUEUED},
        )
        if not inspect_now:
            probe_set_id = probe_set.pk
            transaction.on_commit(lambda: task_send("probe_set_convert", probe_set_id))
    if inspect_now:
        probe_set_convert(probe_set_id=probe_set.pk)
        probe_set.refresh_from_db()
        if probe_set.status == Readiness.FAILED:
            Job.objects.filter(project=project, key=_convert_key(probe_set)).delete()
            probe_set.delete()
            raise RunError(f"Path: {probe_set.error}")
    return probe_set


def _convert_key(probe_set: ProbeSet) -> str:
    return f"probe-set-{probe_set.pk}-convert"


def _converted_home(probe_set: ProbeSet) -> tuple[Path, str]:
    """(folder to convert into, storage key): the folder itself on local storage, else a work folder whose
    files are then uploaded under the key."""
    from django.core.files.storage import FileSystemStorage

    key = f"probe_sets/{probe_set.pk}"
    if isinstance(default_storage, FileSystemStorage):
        return Path(default_storage.path(key)), key
    return Path(settings.WORK_DIR) / "converted" / str(probe_set.pk), key


def probe_set_convert(*, probe_set_id: int) -> None:
    """Convert a registered dataset to the Broden format in storage, its Job showing the progress; then the
    probe set is READY with its path, or FAILED with the error (naming the file) and no files left. A
    redelivered conversion resumes where the first stopped (the writer skips finished images)."""
    import shutil

    from django.core.files.storage import FileSystemStorage

    from runs.storage import store_tree

    probe_set = ProbeSet.objects.get(pk=probe_set_id)
    if probe_set.status != Readiness.PENDING or probe_set.source_format == ProbeSet.Format.BRODEN:
        return
    job = job_begin(
        project=probe_set.project,
        key=_convert_key(probe_set),
        title=f"Convert probe set {probe_set.name} ({probe_set.source_format})",
    )
    out, key = _converted_home(probe_set)
    last = [0.0]

    def report(done: int, total: int) -> None:
        if done == total or time.monotonic() - last[0] >= PROGRESS_INTERVAL_S:
            last[0] = time.monotonic()
            job_progress(job_id=job.pk, done=done, total=total, note="converting images")

    try:
        count = _convert(probe_set, out, report)
        path = str(out)
        if not isinstance(default_storage, FileSystemStorage):
            job_progress(job_id=job.pk, done=count, total=count, note="uploading")
            store_tree(key, out)
            options = _storage_options()
            location = str(options.get("location") or "").strip("/")
            path = f"s3://{options['bucket_name']}/{location + '/' if location else ''}{key}"
            shutil.rmtree(out, ignore_errors=True)
    except DissectionError as exc:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.parent / f".{out.name}.partial", ignore_errors=True)
        error = str(exc).split("\n")[0]
        ProbeSet.objects.filter(pk=probe_set.pk).update(status=Readiness.FAILED, error=error)
        job_fail(job_id=job.pk, error=error)
        return
    ProbeSet.objects.filter(pk=probe_set.pk).update(
        path=path, image_count=count, status=Readiness.READY, error=""
    )
    job_finish(job_id=job.pk)


def _storage_options() -> dict[str, Any]:
    """The default storage's OPTIONS (an S3 bucket's name and location)."""
    storage = settings.STORAGES["default"]
    return dict(storage.get("OPTIONS", {})) if isinstance(storage, dict) else {}


def _convert(probe_set: ProbeSet, out: Path, report: Callable[[int, int], None]) -> int:
    """Write the probe set's source as a Broden set at `out`; returns its image count."""
    from dissection.convert.formats import convert_dataset, read_source

    source = probe_set.source
    src = Path(source["path"])
    size = int(source.get("image_size") or 224)
    image_size, mask_size = (size, size), (max(1, size // 2), max(1, size // 2))
    out.parent.mkdir(parents=True, exist_ok=True)
    if probe_set.source_format == ProbeSet.Format.SEGMENTED:
        from dissection.convert.folder import list_images
        from dissection.convert.segment import segment_folder
        from runs.networks import network_segmenter

        try:
            network = Network.objects.get(pk=source.get("segmenter"))
        except Network.DoesNotExist:
            raise DissectionError(f"the segmenter (network {source.get('segmenter')}) is gone") from None
        segmenter = network_segmenter(network, mask_size=mask_size)
        segment_folder(
            src,
            out,
            segmenter,
            image_size=image_size,
            options={"src": str(src), "segmenter": network.pk},
            progress=False,
            report=report,
        )
        return len(list_images(src))
    found = read_source(probe_set.source_format, src)
    convert_dataset(
        found,
        out,
        fmt=probe_set.source_format,
        image_size=image_size,
        mask_size=mask_size,
        progress=False,
        report=report,
    )
    return len(found.images)


def probe_set_inspect(*, probe_set_id: int) -> None:
    """Read the probe set's index (downloading an S3 prefix first) and record its size or what is wrong."""
    from dissection.broden import load_probe_set
    from runs.storage import probe_set_root

    _record_check(
        ProbeSet,
        probe_set_id,
        lambda probe_set: {"image_count": len(load_probe_set(probe_set_root(probe_set)))},
        {"image_count": 0},
    )


def _record_check(
    model: type[Registered], pk: int, measure: Callable[[Any], dict[str, Any]], unknown: dict[str, Any]
) -> None:
    """Record what `measure` finds (the object is ready) or why it failed (the object failed)."""
    try:
        found, error = measure(model.objects.get(pk=pk)), ""
    except DissectionError as exc:
        found, error = unknown, str(exc)
    status = Readiness.FAILED if error else Readiness.READY
    model.objects.filter(pk=pk).update(**found, error=error, status=status)


def _check(thing: Network | ProbeSet, *, now: bool, field: str) -> None:
    """Hand the check to a worker once the row is committed, or (`now`, the commands) do it here: then a
    failure raises RunError naming `field` and leaves nothing behind."""
    kind = "network" if isinstance(thing, Network) else "probe_set"
    if not now:
        transaction.on_commit(lambda: task_send(f"{kind}_inspect", thing.pk))
        return
    if isinstance(thing, Network):
        network_inspect(network_id=thing.pk)
    else:
        probe_set_inspect(probe_set_id=thing.pk)
    thing.refresh_from_db()
    if thing.status == Readiness.FAILED:
        if isinstance(thing, Network):
            _network_delete_files(thing)
        thing.delete()
        raise RunError(f"{field}: {thing.error}")


def task_send(task: str, *args: object) -> bool:
    """Queue one of `runs.tasks` by name (routed by CELERY_TASK_ROUTES), so that this module, which the
    tasks call, never imports them back. False when the broker is unreachable: the rows are committed, and
    `runs_sweep` (Celery beat, or `manage.py sweep_runs`) queues them once the broker is back."""
    from kombu.exceptions import OperationalError as BrokerError

    from workers.app import app

    try:
        app.send_task(f"runs.tasks.{task}", args=args)
    except BrokerError:
        logger.warning("broker unreachable: runs.tasks.%s%s is left for the sweep", task, args, exc_info=True)
        return False
    return True


def _lock_run(run_id: int) -> DissectionRun:
    """Lock the run row for this transaction and return it. The lock is taken by a write, so that SQLite
    (whose SELECT ... FOR UPDATE is a no-op) also serializes writers here instead of failing an upgrade."""
    DissectionRun.objects.select_for_update().filter(pk=run_id).update(status=F("status"))
    return DissectionRun.objects.get(pk=run_id)


# --- launch and cancel -------------------------------------------------------------------------------------


def _enqueue(shard_ids: Sequence[int]) -> bool:
    """Queue the shards and note when the broker took each; False when it could not take them all. The
    first refusal ends it: each send to a broker that is down waits out its connection retries (seconds on a
    launch form), and the sweep queues whatever was left once the broker is back."""
    sent = []
    for shard_id in shard_ids:
        if not task_send("dissect_shard", shard_id):
            break
        sent.append(shard_id)
    Shard.objects.filter(pk__in=sent).update(queued_at=timezone.now())
    return len(sent) == len(shard_ids)


def _check_ready(thing: Network | ProbeSet, what: str) -> None:
    if thing.status == Readiness.PENDING:
        raise RunError(f"{what.capitalize()}: {thing.name!r} is still being checked; try again in a moment.")
    if thing.status == Readiness.FAILED:
        raise RunError(f"{what.capitalize()}: {thing.name!r} could not be read: {thing.error}")


def run_launch(
    *,
    project: Project,
    name: str,
    network: Network,
    probe_set: ProbeSet | None = None,
    layers: Sequence[str],
    shard_size: int = 64,
    topk: int = 20,
    semantics: str = "paper",
    segmenter: Network | None = None,
    samples: int | None = None,
    seed: int | None = None,
    tokens: str = "auto",
    created_by: Any = None,
) -> DissectionRun:
    """A queued run of `project` with its scan shards (slices of `shard_size` images); they are enqueued on
    commit. The network and the probe set must be the project's, so that no project shows another's.

    A generator network takes a `segmenter` network instead of a probe set: its probe set is `samples`
    samples drawn from `seed` and labelled by the segmenter, made again by each shard that needs them.

    Layer names are checked against the names recorded at registration; the model is not loaded here."""
    run, shard_ids = _run_create(
        project=project,
        name=name,
        network=network,
        probe_set=probe_set,
        layers=layers,
        shard_size=shard_size,
        topk=topk,
        semantics=semantics,
        segmenter=segmenter,
        samples=samples,
        seed=seed,
        tokens=tokens,
        created_by=created_by,
    )
    # After the commit, so a worker always finds the rows; a broker that is down leaves a queued run that the
    # sweep hands to the workers later (`selectors.run_waits_for_broker`), never a half-made one.
    _enqueue(shard_ids)
    return run


def run_series_launch(
    *,
    project: Project,
    name: str,
    networks: Sequence[Network],
    probe_set: ProbeSet,
    layers: Sequence[str],
    shard_size: int = 64,
    topk: int = 20,
    semantics: str = "paper",
    tokens: str = "auto",
    created_by: Any = None,
) -> list[DissectionRun]:
    """One run per network (the checkpoints of a training series, a fine-tuned copy), all with the same probe
    set, layers and settings, named "`name` <network>": every run is made, or none (the first bad network
    or name raises RunError). Their shards are enqueued once all are committed."""
    name = name.strip()
    if not name:
        raise RunError("Name: a series needs a name; each run is called NAME <network>.")
    networks = list(dict.fromkeys(networks))
    if len(networks) < 2:
        raise RunError("Networks: pick at least two networks for a series (one run: launch a run).")
    with transaction.atomic():
        made = [
            _run_create(
                project=project,
                name=f"{name} {network.name}",
                network=network,
                probe_set=probe_set,
                layers=layers,
                shard_size=shard_size,
                topk=topk,
                semantics=semantics,
                tokens=tokens,
                created_by=created_by,
            )
            for network in networks
        ]
    _enqueue([shard_id for _, shard_ids in made for shard_id in shard_ids])
    return [run for run, _ in made]


def _generator_inputs(
    network: Network,
    probe_set: ProbeSet | None,
    segmenter: Network | None,
    samples: int | None,
    seed: int | None,
) -> tuple[int, int, int]:
    """(images, samples, seed) of a run: a classifier's probe set size, or a generator's samples."""
    if network.kind == Network.Kind.SEGMENTER:
        raise RunError(f"Network: {network.name!r} is a segmenter; it labels a generator's samples.")
    if network.kind == Network.Kind.CLASSIFIER:
        if probe_set is None:
            raise RunError("Probe set: pick the probe set to dissect the network on.")
        if segmenter is not None:
            raise RunError(
                f"Segmenter: {network.name!r} is a classifier; only a generator takes a segmenter."
            )
        _check_ready(probe_set, "probe set")
        if probe_set.image_count < 1:
            raise RunError(f"Probe set: {probe_set.name!r} holds no images.")
        return probe_set.image_count, 0, 0
    if probe_set is not None:
        raise RunError("Probe set: a generator is dissected on its own samples; leave the probe set empty.")
    if segmenter is None:
        raise RunError(
            f"Segmenter: pick the segmenter that labels the samples of generator {network.name!r}."
        )
    if segmenter.kind != Network.Kind.SEGMENTER:
        raise RunError(f"Segmenter: {segmenter.name!r} is a {segmenter.kind}, not a segmenter.")
    _check_ready(segmenter, "segmenter")
    if not samples or samples < 2:
        raise RunError("Samples: a generator run needs at least 2 samples.")
    if seed is None or seed < 0:
        raise RunError("Seed: give a seed of 0 or more (the samples are drawn from it).")
    return samples, samples, seed


def _run_create(
    *,
    project: Project,
    name: str,
    network: Network,
    probe_set: ProbeSet | None,
    layers: Sequence[str],
    shard_size: int,
    topk: int,
    semantics: str,
    created_by: Any,
    segmenter: Network | None = None,
    samples: int | None = None,
    seed: int | None = None,
    tokens: str = "auto",
) -> tuple[DissectionRun, list[int]]:
    """The checked rows of a queued run and its scan shards (not yet enqueued) and their ids."""
    _check_project(project, created_by)
    for thing, what in ((network, "Network"), (probe_set, "Probe set"), (segmenter, "Segmenter")):
        if thing is not None and thing.project_id != project.pk:
            raise RunError(f"{what}: {thing.name!r} is not in project {project.name!r}.")
    name = name.strip()
    layers = list(dict.fromkeys(layer.strip() for layer in layers if layer.strip()))
    if not name:
        raise RunError("Name: a run needs a name.")
    if DissectionRun.objects.filter(name=name).exists():
        raise RunError(f"Name: a run called {name!r} exists already.")
    if not layers:
        raise RunError("Layers: name at least one layer to dissect.")
    from dissection.quantile import SEMANTICS

    if semantics not in SEMANTICS:
        raise RunError(f"Semantics: {semantics!r} is not one of {', '.join(SEMANTICS)}.")
    if shard_size < 1 or topk < 1:
        raise RunError("Images per shard and top images per unit must be at least 1.")
    from dissection.tokens import parse_rule

    tokens = (tokens or "auto").strip()
    try:
        parse_rule(tokens)
    except DissectionError as exc:
        raise RunError(f"Token rule: {exc}.") from None
    _check_ready(network, "network")
    images, samples, seed = _generator_inputs(network, probe_set, segmenter, samples, seed)
    unknown = [layer for layer in layers if network.layers and layer not in network.layers]
    if unknown:
        shown = ", ".join(network.layers[:60]) + (", …" if len(network.layers) > 60 else "")
        raise RunError(
            f"Layers: network {network.name!r} has no layer {', '.join(map(repr, unknown))}; "
            f"its layers: {shown}"
        )
    count = math.ceil(images / shard_size)
    with transaction.atomic():
        run = DissectionRun.objects.create(
            project=project,
            name=name,
            network=network,
            probe_set=probe_set,
            segmenter=segmenter,
            samples=samples,
            seed=seed,
            layers=layers,
            tokens=tokens,
            semantics=semantics,
            topk=topk,
            shards_total=2 * count + len(layers) + 3,
            created_by=created_by,
        )
        Shard.objects.bulk_create(
            [
                Shard(
                    run=run,
                    phase=Phase.SCAN,
                    index=i,
                    start=i * shard_size,
                    stop=min((i + 1) * shard_size, images),
                )
                for i in range(count)
            ]
        )
        ids = list(Shard.objects.filter(run=run).order_by("index").values_list("pk", flat=True))
        audit_event_record(
            project=project,
            action=AuditEvent.Action.LAUNCH_RUN,
            actor=created_by,
            run=run,
            subject=f"run {run.name!r}",
            details={
                "network": network.name,
                "probe_set": probe_set.name if probe_set else None,
                **({"segmenter": segmenter.name, "samples": samples, "seed": seed} if segmenter else {}),
                "layers": layers,
                "semantics": semantics,
                "topk": topk,
                "shard_size": shard_size,
            },
        )
    return run, ids


def run_cancel(*, run: DissectionRun, actor: Any = None) -> DissectionRun:
    """Stop a queued or running run: its shards are dropped when a worker picks or reports them, and no
    units are published. `actor`, the requester, is recorded in the audit trail."""
    with transaction.atomic():
        locked = _lock_run(run.pk)
        if locked.status not in ACTIVE:
            raise RunError(f"A {locked.get_status_display().lower()} run cannot be cancelled.")
        locked.status = Status.CANCELLED
        locked.eta_seconds = None
        locked.finished_at = timezone.now()
        locked.save(update_fields=["status", "eta_seconds", "finished_at"])
        audit_event_record(
            project=locked.project,
            action=AuditEvent.Action.CANCEL_RUN,
            actor=actor,
            run=locked,
            subject=f"run {locked.name!r}",
        )
    return locked


def run_fail(*, run_id: int, error: str) -> None:
    """Mark an active run failed with `error` (the first error wins; a cancelled run stays cancelled)."""
    with transaction.atomic():
        DissectionRun.objects.select_for_update().filter(pk=run_id, status__in=ACTIVE).update(
            status=Status.FAILED, error=error[:5000], eta_seconds=None, finished_at=timezone.now()
        )


# --- shard transitions (called by the pipeline) ------------------------------------------------------------


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


def shard_start(*, shard_id: int, count_delivery: bool = True) -> ShardWork | None:
    """Count a delivery and mark the run running; None when the shard must not run (run stopped, or too many
    deliveries: then the run fails). A shard already done comes back with `done` set. A task's own retry
    after a database error (`count_delivery=False`) is not a new delivery."""
    run_id = Shard.objects.values_list("run_id", flat=True).get(pk=shard_id)
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status not in ACTIVE:
            return None
        shard = Shard.objects.select_for_update().get(pk=shard_id)
        work = ShardWork(
            shard.pk,
            run.pk,
            shard.phase,
            shard.layer,
            shard.index,
            shard.start,
            shard.stop,
            shard.status == Shard.Status.DONE,
        )
        if work.done:
            return work
        shard.deliveries += int(count_delivery)
        if shard.deliveries > settings.SHARD_MAX_DELIVERIES:
            run.status, run.finished_at, run.eta_seconds = Status.FAILED, timezone.now(), None
            run.error = (
                f"{shard_title(shard)} was delivered {shard.deliveries} times (its worker died each "
                f"time; limit SHARD_MAX_DELIVERIES={settings.SHARD_MAX_DELIVERIES})"
            )
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
    """How errors name a shard: "scan shard 1 (images 48-95)", "render shard of layer 'conv4'",
    "merge scans step"."""
    if shard.phase == Phase.RENDER:
        return f"render shard of layer {shard.layer!r}"
    if shard.phase in (Phase.SCAN, Phase.TALLY):
        return f"{shard.phase} shard {shard.index} (images {shard.start}-{shard.stop - 1})"
    return f"{Phase(shard.phase).label.lower()} step"


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
            progress=min(1.0, done / max(total, 1)), updated_at=timezone.now()
        )
        _run_update_progress(work.run_id)

    return report


def _run_update_progress(run_id: int) -> None:
    run = DissectionRun.objects.filter(pk=run_id).only("shards_total", "started_at", "status").first()
    if run is None or run.status not in ACTIVE or not run.shards_total:
        return
    done = Shard.objects.filter(run_id=run_id).aggregate(total=Sum("progress"))["total"] or 0.0
    progress = min(0.999, done / run.shards_total)
    eta = None
    if run.started_at:
        elapsed = (timezone.now() - run.started_at).total_seconds()
        eta = run_eta_seconds(progress=progress, elapsed_s=elapsed)
    DissectionRun.objects.filter(pk=run_id, status__in=ACTIVE).update(progress=progress, eta_seconds=eta)


def shard_release(*, work: ShardWork) -> None:
    """A shard given up (its run stopped, or it failed) goes back to pending, with nothing recorded."""
    Shard.objects.filter(pk=work.shard_id, status=Shard.Status.RUNNING).update(
        status=Shard.Status.PENDING, progress=0.0, updated_at=timezone.now()
    )


def _mark_done(run: DissectionRun, shard_id: int, result_keys: dict[str, str]) -> bool:
    shard = Shard.objects.select_for_update().get(pk=shard_id)
    if shard.status == Shard.Status.DONE:
        return False
    shard.status, shard.progress, shard.result_keys = Shard.Status.DONE, 1.0, result_keys
    shard.save(update_fields=["status", "progress", "result_keys", "updated_at"])
    DissectionRun.objects.filter(pk=run.pk).update(shards_done=F("shards_done") + 1)
    return True


def shard_complete(*, work: ShardWork, result_keys: dict[str, str]) -> bool:
    """Record a computed shard once and, when it was the last of its phase, create the next phase's shards
    (enqueued on commit). False when it was already done: a repeated delivery never counts twice."""
    with transaction.atomic():
        run = _lock_run(work.run_id)
        if not _mark_done(run, work.shard_id, result_keys):
            return False
        if run.status in ACTIVE and phase_complete(run=run, phase=work.phase):
            ids = _phase_create(run, NEXT_PHASE[Phase(work.phase)])
            transaction.on_commit(lambda: _enqueue(ids))
    _run_update_progress(work.run_id)
    return True


def phase_complete(*, run: DissectionRun, phase: str) -> bool:
    """Whether every shard of `phase` is done (render: one per layer of the run)."""
    shards = Shard.objects.filter(run_id=run.pk, phase=phase)
    expected = len(run.layers) if phase == Phase.RENDER else shards.count()
    return shards.count() == expected and not shards.exclude(status=Shard.Status.DONE).exists()


def _phase_create(run: DissectionRun, phase: Phase) -> list[int]:
    """The shard rows of `phase` (unique per run, so creating them twice is impossible)."""
    if phase == Phase.TALLY:
        scans = Shard.objects.filter(run_id=run.pk, phase=Phase.SCAN).order_by("index")
        rows = [Shard(run=run, phase=phase, index=s.index, start=s.start, stop=s.stop) for s in scans]
    elif phase == Phase.RENDER:
        rows = [Shard(run=run, phase=phase, layer=layer, index=0) for layer in run.layers]
    else:
        rows = [Shard(run=run, phase=phase, index=0)]
    Shard.objects.bulk_create(rows)
    return list(
        Shard.objects.filter(run_id=run.pk, phase=phase)
        .order_by("layer", "index")
        .values_list("pk", flat=True)
    )


@dataclass(frozen=True)
class PublishedLayer:
    """One rendered layer: its result.json document and where its files lie in storage."""

    layer: str
    document: dict[str, Any]
    prefix: str  # storage key of the layer folder; tiles are prefix + "/" + the document's tile path


def run_publish(*, work: ShardWork, layers: Sequence[PublishedLayer]) -> bool:
    """Write every unit and unit image of the run, mark the publish shard and the run done, all in one
    transaction (so no run shows half-written units); a repeated publish changes nothing. False when the run
    is no longer active (cancelled or failed meanwhile)."""
    with transaction.atomic():
        run = _lock_run(work.run_id)
        if run.status == Status.DONE:
            return True
        if run.status not in ACTIVE:
            return False
        if not _mark_done(run, work.shard_id, {p.layer: p.prefix for p in layers}):
            return True
        for published in layers:
            units = Unit.objects.bulk_create(
                [
                    Unit(
                        run=run,
                        layer=published.layer,
                        channel=entry["channel"],
                        label=entry["label"][:200],
                        concept_category=entry["category"][:50],
                        iou=entry["iou"],
                        interpretable=entry["interpretable"],
                        threshold=entry["threshold"],
                        top_concepts=entry["concepts"],
                        strip=f"{published.prefix}/{entry['strip']}",
                    )
                    for entry in published.document["units"]
                ]
            )
            by_channel = {unit.channel: unit for unit in units}
            UnitImage.objects.bulk_create(
                [
                    UnitImage(  # the full-size tile is made when needed: unit_tiles_ensure
                        unit=by_channel[entry["channel"]],
                        rank=rank,
                        max_activation=image["activation"],
                        source_image=image["image"],
                    )
                    for entry in published.document["units"]
                    for rank, image in enumerate(entry["images"])
                ]
            )
        run.report = {**run.report, **{p.layer: f"{p.prefix}/report.html" for p in layers}}
        run.status, run.progress, run.eta_seconds, run.finished_at = Status.DONE, 1.0, None, timezone.now()
        run.save(update_fields=["report", "status", "progress", "eta_seconds", "finished_at"])
        if run.segmenter_id is not None:
            transaction.on_commit(lambda: task_send("gan_effects", run.pk))
    return True


def unit_tiles_ensure(*, unit_ids: Sequence[int]) -> int:
    """Make, store and record the full-size tiles of these units that have none yet (a dissected unit's
    tiles are made when a batch or a page first needs them, not by its run); returns how many were made.

    Idempotent: a unit whose tiles are recorded is skipped. Files are written before, and outside, the one
    transaction that records them; a rank another call recorded meanwhile keeps that call's file. Raises
    RunError naming the unit when its tiles cannot be made (its report or probe image is gone)."""
    from runs.tiles import unit_tiles_make

    pending = list(
        Unit.objects.filter(pk__in=list(unit_ids), images__image="")
        .distinct()
        .select_related("run__probe_set", "run__network")
        .order_by("run_id", "layer", "channel")
    )
    if not pending:
        return 0
    made = unit_tiles_make(pending)
    with transaction.atomic():
        for unit_id, names in made.items():
            for rank, name in names.items():
                UnitImage.objects.filter(unit_id=unit_id, rank=rank, image="").update(image=name)
    return sum(len(names) for names in made.values())


def run_set_report(*, run_id: int, key: str, value: Any) -> None:
    """Add one entry (e.g. the CAM gallery) to the run's report map."""
    with transaction.atomic():
        run = _lock_run(run_id)
        run.report = {**run.report, key: value}
        run.save(update_fields=["report"])


def cam_gallery_request(*, run: DissectionRun, images: int = 8) -> None:
    """Enqueue (after commit) the CAM gallery of a finished run."""
    if run.status != Status.DONE or run.network_id is None or run.segmenter_id is not None:
        raise RunError("A CAM gallery needs a finished dissection run of a classifier.")
    transaction.on_commit(lambda: task_send("cam_gallery", run.pk, images))


# --- imported units ----------------------------------------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
UNIT_META = "unit.json"


@dataclass
class _UnitFolder:
    folder: Path
    layer: str
    channel: int
    images: list[Path]
    meta: dict[str, Any]


def _parse_unit_folder(folder: Path) -> _UnitFolder:
    layer, sep, channel = folder.name.rpartition("_")
    if not sep or not layer or not channel.isdigit():
        raise ImportUnitsError(f"{folder}: a unit folder is named <layer>_<channel>, e.g. conv4_12")
    images: list[Path] = []
    meta: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.name == UNIT_META:
            meta = _read_unit_meta(path)
            continue
        if path.is_symlink() or not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ImportUnitsError(
                f"{path}: not an image (expected {', '.join(sorted(IMAGE_SUFFIXES))}) or {UNIT_META}"
            )
        _check_image(path)
        images.append(path)
    if not images:
        raise ImportUnitsError(f"{folder}: no images in this unit folder")
    activations = meta.get("activations")
    if activations is not None and (
        not isinstance(activations, list)
        or len(activations) != len(images)
        or not all(_is_number(a) for a in activations)
    ):
        raise ImportUnitsError(
            f"{folder / UNIT_META}: 'activations' must list one number per image ({len(images)})"
        )
    return _UnitFolder(folder, layer, int(channel), images, meta)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# unit.json's fields: what each must be, and how an error says it.
_META_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "label": (lambda v: isinstance(v, str), "a string"),
    "category": (lambda v: isinstance(v, str), "a string"),
    "iou": (lambda v: v is None or _is_number(v), "a number"),
    "threshold": (lambda v: v is None or _is_number(v), "a number"),
    "interpretable": (lambda v: v is None or isinstance(v, bool), "true or false"),
    "top_concepts": (lambda v: isinstance(v, list), "a list"),
    "activations": (lambda v: isinstance(v, list), "a list of numbers"),
}


def _read_unit_meta(path: Path) -> dict[str, Any]:
    """unit.json, checked field by field: every error names the file and the field."""
    from agreement.broden import BRODEN_CATEGORIES

    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ImportUnitsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ImportUnitsError(f"{path}: expected a JSON object")
    for name, value in meta.items():
        if name not in _META_FIELDS:
            raise ImportUnitsError(f"{path}: unknown field {name!r} (expected {', '.join(_META_FIELDS)})")
        check, kind = _META_FIELDS[name]
        if not check(value):
            raise ImportUnitsError(f"{path}: field {name!r} must be {kind}, not {value!r}")
    category = meta.get("category", "")
    if category and category not in BRODEN_CATEGORIES:
        raise ImportUnitsError(
            f"{path}: field 'category' is {category!r}, not one of {', '.join(BRODEN_CATEGORIES)}"
        )
    return meta


def _check_image(path: Path) -> None:
    """Read the image's header only: its size is checked before anything is decoded (a small file can hold a
    huge image), then the file is verified."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > settings.UNIT_IMAGE_MAX_PIXELS:
                    raise ImportUnitsError(
                        f"{path}: {width} x {height} pixels, more than UNIT_IMAGE_MAX_PIXELS="
                        f"{settings.UNIT_IMAGE_MAX_PIXELS}"
                    )
                image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImportUnitsError(f"{path}: refused, the image is too large to decode ({exc})") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise ImportUnitsError(f"{path}: unreadable image ({exc})") from None


def units_import(*, project: Project, run_name: str, directory: Path) -> list[Unit]:
    """Import one sub-folder per unit (`<layer>_<channel>/` with images ranked by file name and an optional
    unit.json: label, category, iou, interpretable, threshold, activations) into the run `run_name` of
    `project` (made when missing).

    Everything is checked before anything is written; a failure names the folder or file and leaves the
    database and media storage as they were.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ImportUnitsError(f"{directory}: not a folder")
    folders = [
        _parse_unit_folder(p)
        for p in sorted(directory.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    ]
    if not folders:
        raise ImportUnitsError(f"{directory}: no unit sub-folders (expected <layer>_<channel>/)")
    run = DissectionRun.objects.filter(name=run_name).first()
    if run is not None and run.project_id != project.pk:
        raise ImportUnitsError(f"run {run_name!r} is not in project {project.name!r}")
    if run is not None:
        for parsed in folders:
            if run.units.filter(layer=parsed.layer, channel=parsed.channel).exists():
                raise ImportUnitsError(
                    f"{parsed.folder}: {parsed.layer} unit {parsed.channel + 1} (channel {parsed.channel}) "
                    f"is already in run {run_name!r}"
                )
    saved: list[str] = []
    try:
        with transaction.atomic():
            run, _ = DissectionRun.objects.get_or_create(
                name=run_name,
                defaults={
                    "project": project,
                    "status": Status.DONE,
                    "progress": 1.0,
                    "finished_at": timezone.now(),
                },
            )
            run.layers = sorted(set(run.layers) | {f.layer for f in folders})
            run.save(update_fields=["layers"])
            units = [_unit_create(run, parsed, saved) for parsed in folders]
    except BaseException as exc:
        for name in saved:
            if default_storage.exists(name):
                default_storage.delete(name)
        if isinstance(exc, OSError):
            raise ImportUnitsError(
                f"{directory}: writing the images failed ({exc.strerror or exc}); nothing was imported"
            ) from None
        raise
    return units


def _unit_create(run: DissectionRun, parsed: _UnitFolder, saved: list[str]) -> Unit:
    meta = parsed.meta
    unit = Unit.objects.create(
        run=run,
        layer=parsed.layer,
        channel=parsed.channel,
        label=str(meta.get("label", ""))[:200],
        concept_category=meta.get("category", "")[:50],
        iou=meta.get("iou"),
        interpretable=meta.get("interpretable"),
        threshold=meta.get("threshold"),
        top_concepts=meta.get("top_concepts", []),
    )
    activations = meta.get("activations") or [None] * len(parsed.images)
    for rank, (path, activation) in enumerate(zip(parsed.images, activations, strict=True)):
        image = UnitImage(unit=unit, rank=rank, max_activation=activation, source_image=path.name)
        name = f"{run.pk}/{parsed.layer}/{parsed.channel}/{rank:03d}{path.suffix.lower()}"
        # Listed before writing, so a write that fails half way (a full disk) is removed too.
        saved.append(image.image.field.generate_filename(image, name))
        with path.open("rb") as handle:
            image.image.save(name, File(handle), save=False)
        saved[-1] = str(image.image.name)
        image.save()
    return unit


# --- the sweep ---------------------------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    """What one sweep did, for the command's output and the logs: shard ids queued again and runs failed, then
    the feature-visualization pieces queued again as (job id, "shard <i>" or "merge") and the jobs failed."""

    requeued: list[int]
    failed: list[int]
    jobs_requeued: list[tuple[int, str]]
    jobs_failed: list[int]


def runs_sweep(*, stale_after: float | None = None) -> SweepOutcome:
    """Hand work nobody holds back to the workers, and fail runs that cannot progress.

    A shard is nobody's when the broker never took it (it was down), when it has been queued, or running
    without a progress report, for longer than SHARD_STALE_AFTER_S: its message was lost (a broker restarted
    without persistence) or its worker died with the message acknowledged. Such a shard is queued
    again (a shard done meanwhile is never counted twice). A run whose shards are all done but that has no
    next step, or that holds no shard at all, cannot progress and is failed with the reason. A feature-
    visualization job the broker refused at launch, or without progress for that long, gets the same: its
    lost groups (or its merge) queued again, never a group whose result is stored (`_featviz_job_sweep`)."""
    limit = settings.SHARD_STALE_AFTER_S if stale_after is None else stale_after
    cutoff = timezone.now() - timedelta(seconds=limit)
    outcome = SweepOutcome(requeued=[], failed=[], jobs_requeued=[], jobs_failed=[])
    for run in DissectionRun.objects.filter(status__in=ACTIVE).order_by("pk"):
        shards = Shard.objects.filter(run=run)
        if not shards.exists():
            run_fail(run_id=run.pk, error="the run holds no shard to compute (was it created by hand?)")
            outcome.failed.append(run.pk)
            continue
        if not shards.exclude(status=Shard.Status.DONE).exists():
            with transaction.atomic():
                locked = _lock_run(run.pk)
                last = (
                    Shard.objects.filter(run=locked).order_by("-pk").values_list("phase", flat=True).first()
                )
                if locked.status in ACTIVE and last is not None and last != Phase.PUBLISH:
                    ids = _phase_create(locked, NEXT_PHASE[Phase(last)])
                    transaction.on_commit(partial(_enqueue, ids))
                    outcome.requeued.extend(ids)
            continue
        lost = Q(status=Shard.Status.PENDING) & (Q(queued_at__isnull=True) | Q(queued_at__lt=cutoff))
        lost |= Q(status=Shard.Status.RUNNING, updated_at__lt=cutoff)
        stale = list(shards.filter(lost).order_by("phase", "layer", "index").values_list("pk", flat=True))
        if stale and _enqueue(stale):
            outcome.requeued.extend(stale)
    jobs = Job.objects.filter(
        Q(status=Job.Status.QUEUED) | Q(status=Job.Status.RUNNING, updated_at__lt=cutoff),
        key__startswith=FEATVIZ_JOB_PREFIX,
    ).order_by("pk")
    for job in jobs:
        _featviz_job_sweep(job, outcome)
    return outcome


# --- feature-visualization jobs: their storage layout, and the sweep's part -------------------------------

FEATVIZ_JOB_PREFIX = "featviz:"


def featviz_prefix(run_id: int, layer: str) -> str:
    """Where a layer's feature visualizations, their plan and their groups' results are stored (the layout
    `runs.featviz` describes); defined here, below it, because the sweep tells lost groups by these files."""
    return f"runs/{run_id}/{layer}/featviz"


def featviz_plan_key(run_id: int, layer: str) -> str:
    return f"{featviz_prefix(run_id, layer)}/plan.json"


def featviz_shard_key(run_id: int, layer: str, index: int) -> str:
    return f"{featviz_prefix(run_id, layer)}/shards/shard-{index}.json"


def _stored_json(key: str) -> Any:
    """The JSON document at `key`, or None when it is missing or cannot be read."""
    try:
        if not default_storage.exists(key):
            return None
        with default_storage.open(key, "rb") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def featviz_missing_shards(*, run_id: int, layer: str, plan: dict[str, Any]) -> list[int]:
    """The groups of `plan` whose result is not stored under its token: the stored files are the truth, so a
    group counts as done only once its worker wrote it, whatever the job's row says."""
    missing = []
    for index in range(len(plan["shards"])):
        part = _stored_json(featviz_shard_key(run_id, layer, index))
        if not isinstance(part, dict) or part.get("token") != plan["token"]:
            missing.append(index)
    return missing


def _featviz_job_sweep(job: Job, outcome: SweepOutcome) -> None:
    """Hand a feature-visualization job back to the workers — one whose groups the broker refused at launch
    (queued), or one without progress for the stale limit (running): its groups whose result is not stored
    are queued (a message refused or lost, a worker gone), or the merge when all are stored (the last group's
    merge was lost). The job is claimed by moving it to running with `updated_at` now, so a concurrent or the
    next sweep leaves the queued pieces their time; when the broker takes nothing, the claim is undone and the
    next sweep tries again. A job whose run or plan is gone can never finish: it fails."""
    run_id_text, _, layer = job.key.removeprefix(FEATVIZ_JOB_PREFIX).partition(":")
    run_id = int(run_id_text) if run_id_text.isdigit() else None
    if run_id is None or not DissectionRun.objects.filter(pk=run_id).exists():
        job_fail(job_id=job.pk, error=f"Run {run_id_text} no longer exists: its images cannot be finished.")
        outcome.jobs_failed.append(job.pk)
        return
    plan_key = featviz_plan_key(run_id, layer)
    plan = _stored_json(plan_key)
    if not isinstance(plan, dict) or not isinstance(plan.get("shards"), list) or not plan.get("token"):
        error = f"Its plan ({plan_key}) cannot be read: launch the visualization again."
        job_fail(job_id=job.pk, error=error)
        outcome.jobs_failed.append(job.pk)
        return
    claimed_at = timezone.now()
    claimed = Job.objects.filter(pk=job.pk, status=job.status, updated_at=job.updated_at)
    note = job.note if job.status == Job.Status.RUNNING else "Queued now that the task broker is back."
    if not claimed.update(status=Job.Status.RUNNING, updated_at=claimed_at, note=note):
        return  # it progressed meanwhile, or another sweep took it
    token = plan["token"]
    missing = featviz_missing_shards(run_id=run_id, layer=layer, plan=plan)
    pieces: list[tuple[str, str, tuple[object, ...]]] = [
        (f"shard {index}", "featviz_shard", (run_id, layer, index, token)) for index in missing
    ] or [("merge", "featviz_merge", (run_id, layer, token))]
    sent = 0
    for label, task, args in pieces:
        if not task_send(task, *args):
            break  # the broker is down: each further send would wait out its retries
        outcome.jobs_requeued.append((job.pk, label))
        sent += 1
    if not sent:
        Job.objects.filter(pk=job.pk, updated_at=claimed_at).update(
            status=job.status, updated_at=job.updated_at, note=job.note
        )


# --- API tokens --------------------------------------------------------------------------------------------

API_TOKEN_PREFIX = "us_"
API_TOKEN_TOUCH_S = 60
"""How stale `last_used_at` may get before a request writes it again (not one write per request)."""


def _api_token_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(*, user: Any, name: str) -> tuple[ApiToken, str]:
    """A new API token of `user` (an active staff account) and its key, which is shown once and never
    stored: only its SHA-256 is."""
    name = name.strip()
    if not name:
        raise RunError("Name: say what the token is for, e.g. the script that uses it.")
    if len(name) > 100:
        raise RunError("Name: at most 100 characters.")
    if not is_requester(user):
        raise RunError(
            f"User: {user.get_username()!r} is not an active staff account; API tokens are for requesters."
        )
    key = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, key_hash=_api_token_hash(key), prefix=key[:10])
    return token, key


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Stop `token` from working, for good (the row stays as the record)."""
    if token.revoked_at is not None:
        raise RunError(f"Token {token}: already revoked.")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    return token


def api_token_authenticate(*, key: str) -> Any:
    """The user whose live token `key` is, when that user is still a requester; else None. Notes when the
    token was last used."""
    if not key.startswith(API_TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=_api_token_hash(key), revoked_at__isnull=True)
        .first()
    )
    if token is None or not is_requester(token.user):
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(seconds=API_TOKEN_TOUCH_S):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


JobProgress = Callable[[int, int, str], None]


def job_begin(*, project: Project, key: str, title: str) -> Job:
    """The job `key` of `project`, started now; a failed or unfinished one (a process that died) starts again
    from zero, a done one is returned as it is."""
    with transaction.atomic():
        job, _ = Job.objects.select_for_update().get_or_create(
            project=project, key=key, defaults={"title": title}
        )
        if job.status != Job.Status.DONE:
            job.title, job.status, job.done, job.total, job.note, job.error = (
                title,
                Job.Status.RUNNING,
                0,
                0,
                "",
                "",
            )
            job.started_at, job.finished_at = timezone.now(), None
            job.save()
    return job


def job_progress(*, job_id: int, done: int, total: int, note: str = "") -> None:
    """Record how far the job is (`done` of `total` steps, the step in words), and that it is alive (the
    sweep takes a job without progress for SHARD_STALE_AFTER_S as lost)."""
    Job.objects.filter(pk=job_id).update(
        done=min(done, total), total=total, note=note[:300], updated_at=timezone.now()
    )


def job_finish(*, job_id: int, link: str = "") -> None:
    now = timezone.now()
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.DONE, done=F("total"), note="", link=link[:300], finished_at=now, updated_at=now
    )


def job_fail(*, job_id: int, error: str) -> None:
    now = timezone.now()
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.FAILED, error=error[:5000], finished_at=now, updated_at=now
    )
