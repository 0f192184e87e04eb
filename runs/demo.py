"""The demo's shared assets: a synthetic probe set and a toy network trained on it (cached under var/demo),
registered in the demo project. The demo's runs, batches and background extras build on these."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.core.files import File

from runs.models import Network, ProbeSet, Project
from runs.services import network_register, probe_set_register, project_get_or_create

PROBE_IMAGES = 160
PROBE_SIZE = 64
TOY_EPOCHS = 40
DEMO_PROJECT = "Demo"
DEMO_NETWORK = "toy (demo)"
DEMO_PROBE_SET = "synthetic (demo)"
DEMO_RUN = "demo: toy network on the synthetic probe set"


def cache_dir() -> Path:
    """Where the demo keeps its probe set and trained toy network between `make run`s."""
    return Path(os.environ.get("DEMO_CACHE_DIR") or Path(settings.BASE_DIR) / "var" / "demo")


def probe_set_folder(cache: Path, *, progress: TextIO | None = None) -> Path:
    """The synthetic probe set under `cache`, built (atomically) on first use, saying so on `progress`."""
    import shutil
    import tempfile

    from dissection.synth import make_probe_set

    folder = cache / "probe-set"
    if (folder / "index.csv").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".probe-set-", dir=cache))
    if progress is not None:
        progress.write(
            f"Building the synthetic probe set ({PROBE_IMAGES} images of {PROBE_SIZE} px) in {folder}\n"
        )
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


def demo_probe_set(project: Project, progress: TextIO | None) -> ProbeSet:
    """The demo's synthetic probe set, built and registered in `project` unless it is."""
    folder = probe_set_folder(cache_dir(), progress=progress)
    return ProbeSet.objects.filter(name=DEMO_PROBE_SET).first() or probe_set_register(
        project=project, name=DEMO_PROBE_SET, path=str(folder), inspect_now=True
    )


def demo_registered(project: Project, progress: TextIO | None) -> tuple[Network, ProbeSet]:
    probe_set = demo_probe_set(project, progress)
    network = Network.objects.filter(name=DEMO_NETWORK).first()
    if network is None:
        cache = cache_dir()
        weights = toy_weights(cache, probe_set_folder(cache), progress=progress is not None)
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
