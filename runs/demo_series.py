"""The demo's training series (a demo extra): the toy network trained again with checkpoints kept along the
way and a copy fine-tuned on the images' scenes, registered as versions of one network, dissected alike
through the workers, and compared. The weights are cached under the demo's cache folder, so a second
`make run` does not train again."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from django.core.files import File

from runs.demo import cache_dir, demo_probe_set, probe_set_folder
from runs.follow import POLL_S
from runs.models import DissectionRun, Network, ProbeSet, Project
from runs.selectors import runs_compare_url
from runs.services import ACTIVE, network_register, run_series_launch
from workers.inprocess import in_process_worker, needs_in_process_worker

SERIES_EPOCHS = 12
SERIES_SAVE_EVERY = 4  # checkpoints after epochs 4 and 8, and the last one: three versions
FINETUNE_EPOCHS = 4
SERIES_LAYERS = ("conv4",)
SERIES_SHARD_SIZE = 80
SERIES_TOPK = 6
SERIES_NAME = "demo series:"  # each run is "demo series: <network>"
SERIES_NETWORK = "toy series"
# Progress is reported out of 100: training, fine-tuning, registering, then dissecting.
TRAINED, TUNED, REGISTERED = 25, 35, 40

Progress = Callable[[int, int, str], None]


class DemoSeriesError(RuntimeError):
    """A run of the demo series did not finish (the message names it and says why)."""


def series_weights(
    cache: Path, probe_set: Path, *, epochs: int, save_every: int, finetune_epochs: int, progress: Progress
) -> tuple[list[Path], Path]:
    """The checkpoints of the series in training order and the fine-tuned copy of the last one, trained
    (deterministically) unless cached; the folder names the settings, so other settings train anew."""
    from dissection.train import checkpoint_series, train_toy

    folder = cache / f"series-e{epochs}-every{save_every}"
    last = folder / "toy.pt"
    if not last.is_file():
        progress(0, 100, f"training the toy network for {epochs} epochs, a checkpoint every {save_every}")
        train_toy(probe_set, last, seed=0, epochs=epochs, save_every=save_every, progress=False)
    tuned = folder / f"scene-e{finetune_epochs}.pt"
    if not tuned.is_file():
        progress(TRAINED, 100, f"fine-tuning a copy on the scenes for {finetune_epochs} epochs")
        train_toy(
            probe_set, tuned, seed=0, epochs=finetune_epochs, target="scene", finetune=last, progress=False
        )
    return checkpoint_series(last), tuned


def _trained(path: Path) -> tuple[int, int]:
    """The epochs and optimizer steps the checkpoint at `path` was trained for (`train_toy` records them)."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return int(checkpoint["epoch"]), int(checkpoint["step"])


def _version(
    project: Project, name: str, weights: Path, *, step: int, base: Network | None, user: Any
) -> Network:
    """The network `name` of the project, registered from `weights` as a version of `base` unless it is."""
    found = Network.objects.filter(project=project, name=name).first()
    if found is not None:
        return found
    with weights.open("rb") as handle:
        return network_register(
            project=project,
            name=name,
            architecture="toy",
            weights=File(handle, name=weights.name),
            step=step,
            base=base,
            inspect_now=True,
            created_by=user,
        )


def series_networks(
    project: Project, checkpoints: Sequence[Path], tuned: Path, *, user: Any
) -> list[Network]:
    """The checkpoints as versions of the first one, each with its training step, then the fine-tuned copy:
    a version of the last checkpoint whose step continues its training."""
    networks: list[Network] = []
    for path in checkpoints:
        epoch, step = _trained(path)
        networks.append(
            _version(
                project,
                f"{SERIES_NETWORK} epoch {epoch}",
                path,
                step=step,
                base=networks[0] if networks else None,
                user=user,
            )
        )
    last = networks[-1]
    networks.append(
        _version(
            project,
            f"{SERIES_NETWORK} fine-tuned on scenes",
            tuned,
            step=(last.step or 0) + _trained(tuned)[1],
            base=last,
            user=user,
        )
    )
    return networks


def _series_runs(
    project: Project, networks: Sequence[Network], probe_set: ProbeSet, *, user: Any
) -> list[DissectionRun]:
    """The series' finished runs, else the series launched anew (runs left unfinished by an earlier process
    are dropped: their queue may have died with it)."""
    names = [f"{SERIES_NAME} {network.name}" for network in networks]
    existing = {run.name: run for run in DissectionRun.objects.filter(project=project, name__in=names)}
    if len(existing) == len(names) and all(
        run.status == DissectionRun.Status.DONE for run in existing.values()
    ):
        return [existing[name] for name in names]
    for run in existing.values():
        run.delete()
    return run_series_launch(
        project=project,
        name=SERIES_NAME,
        networks=networks,
        probe_set=probe_set,
        layers=list(SERIES_LAYERS),
        shard_size=SERIES_SHARD_SIZE,
        topk=SERIES_TOPK,
        created_by=user,
    )


def _wait(runs: Sequence[DissectionRun], progress: Progress) -> None:
    """Report the series' progress (when it moves) until every run stops; one that did not finish raises."""
    reported = None
    while True:
        for run in runs:
            run.refresh_from_db()
        finished = sum(run.status not in ACTIVE for run in runs)
        share = sum(1.0 if run.status not in ACTIVE else run.progress for run in runs) / len(runs)
        now = (
            REGISTERED + int((100 - REGISTERED) * share),
            f"dissecting: {finished} of {len(runs)} runs done",
        )
        if now != reported:
            progress(now[0], 100, now[1])
            reported = now
        if finished == len(runs):
            break
        time.sleep(POLL_S)
    for run in runs:
        if run.status != DissectionRun.Status.DONE:
            raise DemoSeriesError(f"run {run.name!r} {run.get_status_display().lower()}: {run.error}")


def demo_series_build(
    *,
    project: Project,
    user: Any,
    progress: Progress,
    epochs: int = SERIES_EPOCHS,
    save_every: int = SERIES_SAVE_EVERY,
    finetune_epochs: int = FINETUNE_EPOCHS,
) -> str:
    """Train (or reuse) the series and its fine-tuned copy, dissect each version through the workers (the
    worker thread of this process when the broker is in memory), and return their comparison page."""
    cache = cache_dir()
    probe_set = demo_probe_set(project, None)
    checkpoints, tuned = series_weights(
        cache,
        probe_set_folder(cache),
        epochs=epochs,
        save_every=save_every,
        finetune_epochs=finetune_epochs,
        progress=progress,
    )
    progress(TUNED, 100, "registering the versions of the network")
    networks = series_networks(project, checkpoints, tuned, user=user)
    progress(REGISTERED, 100, f"dissecting {len(networks)} versions")
    with in_process_worker() if needs_in_process_worker() else nullcontext():
        runs = _series_runs(project, networks, probe_set, user=user)
        _wait(runs, progress)
    return runs_compare_url(runs=runs)
