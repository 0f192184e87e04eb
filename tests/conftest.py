"""Fixtures shared by every area's tests: a small synthetic probe set and a toy model trained on it.

Both are built once per session. The probe set has 160 images of 64 px (masks 32 px) in the Broden format
with boxes.csv and classes.txt (see `dissection.synth`); the toy checkpoint
(`dissection.networks.toy_checkpoint`) is trained on it for 40 epochs (~20 s on one core), enough to classify
the main object well above chance and to grow detector units in conv3/conv4. Load it with
`dissection.networks.load_model("toy", weights=toy_weights)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

PROBE_IMAGES = 160
PROBE_SIZE = 64
TOY_EPOCHS = 40


@pytest.fixture(scope="session")
def probe_set_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic synthetic Broden-format probe set (also holds boxes.csv and classes.txt)."""
    from dissection.synth import make_probe_set

    return make_probe_set(tmp_path_factory.mktemp("probe_set"), images=PROBE_IMAGES, size=PROBE_SIZE, seed=0)


@pytest.fixture(scope="session")
def toy_weights(probe_set_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a toy checkpoint trained on `probe_set_dir` (a shortened, deterministic schedule)."""
    from dissection.train import train_toy

    out = tmp_path_factory.mktemp("toy") / "toy.pt"
    return train_toy(probe_set_dir, out, seed=0, epochs=TOY_EPOCHS, progress=False)


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
