"""Fixtures shared by every area's tests: a small synthetic probe set and a toy model trained on it.

Both are built once per test run: under pytest-xdist the first process to need one builds it into the run's
shared temporary folder (under a file lock) and the others reuse it. The probe set has 160 images of 64 px
(masks 32 px) in the Broden format with boxes.csv and classes.txt (see `dissection.synth`); the toy checkpoint
(`dissection.networks.toy_checkpoint`) is trained on it for 40 epochs on two threads (~25 s), enough to
classify the main object well above chance and to grow detector units in conv3/conv4. Load it with
`dissection.networks.load_model("toy", weights=toy_weights)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

PROBE_IMAGES = 160
PROBE_SIZE = 64
TOY_EPOCHS = 40
TOY_THREADS = 2


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, give each test process's torch its share of the cores (and the subprocesses it
    starts, through OMP_NUM_THREADS). Torch's default of one intra-op thread per core in every process
    oversubscribes the CPU, and its spinning threads then train the toy network four times slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if not workers or os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def shared_build(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """`build(folder)` once per test run: in one process, into a fresh folder; under pytest-xdist, into the
    run's folder shared by its processes, by whichever process comes first (the others wait, then reuse it).
    A build that fails leaves no marker, so the next process tries again and fails the same way."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent  # this run's folder, above each process's own
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            folder.mkdir(exist_ok=True)
            done.write_text(str(build(folder)))
    return Path(done.read_text())


@pytest.fixture(scope="session")
def probe_set_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic synthetic Broden-format probe set (also holds boxes.csv and classes.txt)."""
    from dissection.synth import make_probe_set

    return shared_build(
        tmp_path_factory,
        "probe_set",
        lambda folder: make_probe_set(folder, images=PROBE_IMAGES, size=PROBE_SIZE, seed=0),
    )


@pytest.fixture(scope="session")
def toy_weights(probe_set_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a toy checkpoint trained on `probe_set_dir` (a shortened, deterministic schedule)."""
    import torch

    from dissection.train import train_toy

    def build(folder: Path) -> Path:
        # Training sums gradients in an order that depends on torch's thread count: always TOY_THREADS, so
        # that every process and machine (and CI's two cores, on which the tests' expectations were set)
        # trains the same weights, whatever share of the cores the process was given.
        threads = torch.get_num_threads()
        torch.set_num_threads(TOY_THREADS)
        try:
            return train_toy(probe_set_dir, folder / "toy.pt", seed=0, epochs=TOY_EPOCHS, progress=False)
        finally:
            torch.set_num_threads(threads)

    return shared_build(tmp_path_factory, "toy", build)


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> None:
    """Each test writes media (tiles, uploads, shard states) into its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.WORK_DIR = tmp_path / "work"


@pytest.fixture
def staff_client(django_user_model: Any) -> Any:
    """A requester's client; the requester is a member of the project the factories put things in."""
    from tests.factories import logged_in, staff_user

    return logged_in(staff_user(django_user_model))


@pytest.fixture(autouse=True)
def _login_passes_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Django 5.2's `Client.login()` authenticates without a request, which django-axes' backend refuses (it
    counts attempts per address); give it the request a login form would have, so `login()` keeps working
    and counts like a login from 127.0.0.1."""
    from django.test import Client, RequestFactory

    original = Client.login

    def login(self: Client, **credentials: Any) -> bool:
        credentials.setdefault("request", RequestFactory().post("/accounts/login/"))
        return original(self, **credentials)

    monkeypatch.setattr(Client, "login", login)
