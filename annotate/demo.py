"""The demo content `make run` shows: a synthetic probe set and a toy network trained on it (cached under
var/demo), a real dissection run through the workers (a worker thread in this process by default), a local
batch made from its units with two gold units whose answers come from the probe set's ground truth, and a
simulated crowd's answers to part of it and to a blind verification batch."""

from __future__ import annotations

import io
import os
import secrets
from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files import File

from annotate.models import Annotation, Batch
from annotate.services import GoldAnswer, batch_create, batch_publish
from annotate.services.verification import verification_batch_create
from annotate.simulation import crowd_simulate
from runs.follow import follow_run
from runs.models import DissectionRun, Network, ProbeSet, Project, Unit
from runs.services import network_register, probe_set_register, project_get_or_create, run_launch
from workers.inprocess import in_process_worker, needs_in_process_worker

PASSWORD_FILE = "demo-password"


def demo_password() -> str:
    """DEMO_PASSWORD, else the one an earlier run stored under var/, else a new one (then stored)."""
    if os.environ.get("DEMO_PASSWORD"):
        return os.environ["DEMO_PASSWORD"]
    path = Path(settings.BASE_DIR) / "var" / PASSWORD_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


PROBE_IMAGES = 160
PROBE_SIZE = 64
TOY_EPOCHS = 40
RUN_LAYERS = ("conv3", "conv4")
RUN_TOPK = 12
RUN_SHARD_SIZE = 40
BATCH_UNITS = 8
# Broden-style categories of the synthetic probe set -> the six human categories of the worker form.
HUMAN_CATEGORY = {
    "color": "color",
    "object": "object",
    "part": "part",
    "material": "texture",
    "scene": "scene",
    "texture": "texture",
}


def cache_dir() -> Path:
    """Where the demo keeps its probe set and trained toy network between `make run`s."""
    return Path(os.environ.get("DEMO_CACHE_DIR") or Path(settings.BASE_DIR) / "var" / "demo")


def probe_set_folder(cache: Path) -> Path:
    """The synthetic probe set under `cache`, built (atomically) on first use."""
    import shutil
    import tempfile

    from dissection.synth import make_probe_set

    folder = cache / "probe-set"
    if (folder / "index.csv").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".probe-set-", dir=cache))
    try:
        make_probe_set(partial, images=PROBE_IMAGES, size=PROBE_SIZE, seed=0)
        shutil.rmtree(folder, ignore_errors=True)
        partial.replace(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder


def toy_weights(cache: Path, probe_set: Path, *, progress: bool) -> Path:
    """The toy network trained on the probe set (CPU, about half a minute), cached under `cache`."""
    from dissection.train import train_toy

    path = cache / "toy.pt"
    return (
        path if path.is_file() else train_toy(probe_set, path, seed=0, epochs=TOY_EPOCHS, progress=progress)
    )


DEMO_USERNAME = "requester"
DEMO_PROJECT = "Demo"
DEMO_NETWORK = "toy (demo)"
DEMO_PROBE_SET = "synthetic (demo)"
DEMO_RUN = "demo: toy network on the synthetic probe set"
DEMO_BATCH = "Label the units of the demo run"
DEMO_VERIFICATION = "Verify the labels of the demo run"
# The simulated crowd answers this many of the demo batch's 8 x 3 slots, leaving some for a person to try.
DEMO_SIMULATED_ANSWERS = 16


class DemoError(RuntimeError):
    """The demo dissection did not finish (its message says why)."""


@dataclass
class DemoContent:
    username: str
    password: str
    batch: Batch
    run: DissectionRun


def _registered(project: Project, progress: TextIO | None) -> tuple[Network, ProbeSet]:
    cache = cache_dir()
    folder = probe_set_folder(cache)
    probe_set = ProbeSet.objects.filter(name=DEMO_PROBE_SET).first() or probe_set_register(
        project=project, name=DEMO_PROBE_SET, path=str(folder), inspect_now=True
    )
    network = Network.objects.filter(name=DEMO_NETWORK).first()
    if network is None:
        weights = toy_weights(cache, folder, progress=progress is not None)
        with weights.open("rb") as handle:
            network = network_register(
                project=project,
                name=DEMO_NETWORK,
                architecture="toy",
                weights=File(handle, name="toy.pt"),
                inspect_now=True,
            )
    return network, probe_set


def demo_project() -> Project:
    """The project of the demo's content; the demo requester is its member."""
    return project_get_or_create(name=DEMO_PROJECT)


def demo_run_build(*, progress: TextIO | None = None) -> DissectionRun:
    """The finished demo run, dissecting conv3 and conv4 through the workers unless one is done already."""
    run = DissectionRun.objects.filter(name=DEMO_RUN).first()
    if run is not None and run.status == DissectionRun.Status.DONE:
        return run
    if run is not None:  # failed, cancelled, or queued in a broker that died with its process
        run.delete()
    project = demo_project()
    network, probe_set = _registered(project, progress)
    with in_process_worker() if needs_in_process_worker() else nullcontext():
        run = run_launch(
            project=project,
            name=DEMO_RUN,
            network=network,
            probe_set=probe_set,
            layers=list(RUN_LAYERS),
            shard_size=RUN_SHARD_SIZE,
            topk=RUN_TOPK,
        )
        run = follow_run(run, stream=progress or io.StringIO())
    if run.status != DissectionRun.Status.DONE:
        raise DemoError(f"the demo run {run.status}: {run.error}")
    return run


def demo_gold(units: list[Unit]) -> dict[int, GoldAnswer]:
    """Two gold units: the interpretable units with the highest IoU (distinct labels); the accepted answer is
    the label the probe set's ground truth gives them, in the matching human category."""
    gold: dict[int, GoldAnswer] = {}
    labels: set[str] = set()
    for unit in sorted(units, key=lambda u: (-(u.iou or 0.0), u.layer, u.channel)):
        if unit.interpretable and unit.label not in labels and unit.concept_category in HUMAN_CATEGORY:
            gold[unit.pk] = GoldAnswer(HUMAN_CATEGORY[unit.concept_category], (unit.label,))
            labels.add(unit.label)
        if len(gold) == 2:
            break
    return gold


def demo_content_build(*, password: str, progress: TextIO | None = None) -> DemoContent:
    """Idempotently: the demo requester, the demo run (dissected if missing) and a published local batch of
    its most interpretable conv4 units with two gold units."""
    user, _ = get_user_model().objects.get_or_create(
        username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    user.is_staff = True
    user.set_password(password)
    user.save()
    demo_project().members.add(user)
    run = demo_run_build(progress=progress)
    batch = (
        Batch.objects.filter(title=DEMO_BATCH, created_by=user)
        .exclude(state__in=[Batch.State.CANCELLED, Batch.State.FINISHED])
        .first()
    )
    if batch is None:
        candidates = list(run.units.filter(layer=RUN_LAYERS[-1]))
        gold = demo_gold(candidates)
        others = [
            u for u in sorted(candidates, key=lambda u: (-(u.iou or 0.0), u.channel)) if u.pk not in gold
        ]
        chosen = others[: BATCH_UNITS - len(gold)]
        for position, pk in zip((1, 4), gold, strict=False):  # gold units sit among the others
            chosen.insert(position, next(u for u in candidates if u.pk == pk))
        batch = batch_create(
            title=DEMO_BATCH,
            units=chosen,
            gold=gold,
            created_by=user,
            assignments_per_task=3,
            images_per_task=RUN_TOPK,
            reward=Decimal("0.05"),
            instructions="Look at the highlighted regions. What do most of them show?",
        )
    if batch.state in (Batch.State.DRAFT, Batch.State.PAUSED):
        batch_publish(batch=batch)
    demo_crowd_answer(batch=batch, user=user)
    return DemoContent(username=DEMO_USERNAME, password=password, batch=batch, run=run)


def demo_crowd_answer(*, batch: Batch, user: object) -> None:
    """Once: a simulated crowd (one spammer among eight) answers part of the demo batch through the worker
    pages, and a blind verification batch of its labels is published and answered, so the comparison
    dashboard has every table and plot to show."""
    if Annotation.objects.filter(assignment__task__batch=batch).exists():
        return
    crowd_simulate(batch=batch, workers=8, spammers=1, accuracy=0.8, limit=DEMO_SIMULATED_ANSWERS, seed=0)
    verification = verification_batch_create(batch=batch, title=DEMO_VERIFICATION, created_by=user)
    batch_publish(batch=verification)
    crowd_simulate(batch=verification, workers=5, spammers=0, accuracy=0.85, seed=1)
