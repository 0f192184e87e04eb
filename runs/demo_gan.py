"""The demo's toy GAN (a demo extra): the toy segmenter trained on the demo's synthetic probe set and the toy
generator trained on synth's scenes, with small budgets (about two minutes on two CPU cores; cached under the
demo's cache folder, so a second `make run` does not train again), registered as a segmenter and a generator,
one generator layer dissected through the workers, and the causal effects the workers compute once the run is
published. The run page shows the report, the effects and the paint page."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from django.core.files import File
from django.urls import reverse

from runs.demo import cache_dir, probe_set_folder
from runs.effects import REPORT_KEY
from runs.follow import POLL_S
from runs.models import DissectionRun, Network, Project
from runs.services import ACTIVE, network_register, run_launch
from workers.inprocess import in_process_worker, needs_in_process_worker

SEGMENTER_EPOCHS = 40  # 160 steps on the demo's 128 training images
GENERATOR_STEPS = 400
GENERATOR_SCENES = 1600
GAN_LAYER = "layer1"
GAN_SAMPLES = 400
GAN_SEED = 0
GAN_SHARD_SIZE = 200
GAN_TOPK = 8
GENERATOR_NAME = "toy generator (demo)"
SEGMENTER_NAME = "toy segmenter (demo)"
GAN_RUN = "demo: toy generator, layer1, labelled by the toy segmenter"
# Progress is reported out of 100: training the segmenter, the generator, registering, dissecting, effects.
SEGMENTED, GENERATED, REGISTERED, DISSECTED = 20, 45, 50, 80

Progress = Callable[[int, int, str], None]


class DemoGanError(RuntimeError):
    """The demo's generator run or its effects did not finish (the message says why)."""


def gan_weights(
    cache: Path, *, epochs: int, steps: int, scenes: int, progress: Progress
) -> tuple[Path, Path]:
    """(segmenter, generator) checkpoints, trained (deterministically) unless cached; the names carry the
    budgets, so other budgets train anew."""
    from dissection.gan.train import train_toy_generator, train_toy_segmenter

    segmenter = cache / f"toy-segmenter-e{epochs}.pt"
    if not segmenter.is_file():
        progress(0, 100, f"training the toy segmenter for {epochs} epochs")
        train_toy_segmenter(probe_set_folder(cache), segmenter, seed=0, epochs=epochs, progress=False)
    generator = cache / f"toy-generator-s{steps}-n{scenes}.pt"
    if not generator.is_file():
        progress(SEGMENTED, 100, f"training the toy generator for {steps} steps")
        train_toy_generator(generator, seed=0, steps=steps, scenes=scenes, progress=False)
    return segmenter, generator


def _network(project: Project, name: str, kind: str, architecture: str, weights: Path, user: Any) -> Network:
    found = Network.objects.filter(project=project, name=name).first()
    if found is not None:
        return found
    with weights.open("rb") as handle:
        return network_register(
            project=project,
            name=name,
            kind=kind,
            architecture=architecture,
            weights=File(handle, name=weights.name),
            inspect_now=True,
            created_by=user,
        )


def _gan_run(
    project: Project, generator: Network, segmenter: Network, *, samples: int, user: Any
) -> DissectionRun:
    """The demo's finished generator run, else one launched anew (one left unfinished by an earlier process
    is dropped: its queue may have died with it)."""
    existing = DissectionRun.objects.filter(project=project, name=GAN_RUN).first()
    if existing is not None and existing.status == DissectionRun.Status.DONE:
        return existing
    if existing is not None:
        existing.delete()
    return run_launch(
        project=project,
        name=GAN_RUN,
        network=generator,
        segmenter=segmenter,
        samples=samples,
        seed=GAN_SEED,
        layers=[GAN_LAYER],
        shard_size=GAN_SHARD_SIZE,
        topk=GAN_TOPK,
        created_by=user,
    )


def _wait(run: DissectionRun, progress: Progress) -> None:
    """Report the run's progress, then wait for its effects (queued when it is published)."""
    while True:
        run.refresh_from_db()
        if run.status not in ACTIVE:
            break
        progress(REGISTERED + int((DISSECTED - REGISTERED) * run.progress), 100, "dissecting the generator")
        time.sleep(POLL_S)
    if run.status != DissectionRun.Status.DONE:
        raise DemoGanError(f"run {run.name!r} {run.get_status_display().lower()}: {run.error}")
    while REPORT_KEY not in run.report:
        if f"{REPORT_KEY}_error" in run.report:
            raise DemoGanError(f"causal effects of run {run.name!r}: {run.report[f'{REPORT_KEY}_error']}")
        progress(DISSECTED, 100, "computing the causal effects of its top concepts")
        time.sleep(POLL_S)
        run.refresh_from_db()


def demo_gan_build(
    *,
    project: Project,
    user: Any,
    progress: Progress,
    epochs: int = SEGMENTER_EPOCHS,
    steps: int = GENERATOR_STEPS,
    scenes: int = GENERATOR_SCENES,
    samples: int = GAN_SAMPLES,
) -> str:
    """Train (or reuse) the toy segmenter and generator, register them, dissect the generator's layer1
    through the workers (the worker thread of this process when the broker is in memory), wait for its
    causal effects, and return the run page."""
    segmenter_weights, generator_weights = gan_weights(
        cache_dir(), epochs=epochs, steps=steps, scenes=scenes, progress=progress
    )
    progress(GENERATED, 100, "registering the generator and the segmenter")
    segmenter = _network(project, SEGMENTER_NAME, "segmenter", "toy-segmenter", segmenter_weights, user)
    generator = _network(project, GENERATOR_NAME, "generator", "toy-generator", generator_weights, user)
    progress(REGISTERED, 100, "dissecting the generator")
    with in_process_worker() if needs_in_process_worker() else nullcontext():
        run = _gan_run(project, generator, segmenter, samples=samples, user=user)
        _wait(run, progress)
    progress(100, 100, "done")
    return reverse("runs:run_detail", args=[run.pk])
