"""Builders the test suites share: tiny images, runs and units with their image sets, logged-in staff clients.

Runs, networks, probe sets and batches belong to a project. The builders put them in one shared project,
`SHARED_PROJECT`, and `staff_user` (so the `staff_client` fixture) is its member: a test that needs a second
requester makes one in a project of its own.
"""

from __future__ import annotations

import io
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.test import Client
from PIL import Image

from runs.models import DissectionRun, Project, Unit, UnitImage

STAFF_PASSWORD = "pw-for-tests-1234"
SHARED_PROJECT = "Tests"


def shared_project() -> Project:
    """The project the builders put things in (made on first use)."""
    project, _ = Project.objects.get_or_create(name=SHARED_PROJECT)
    return project


def run_create(name: str = "test run", **fields: Any) -> DissectionRun:
    """A run row of the shared project (or `project=`), without shards: what an import or a test needs."""
    fields.setdefault("project", shared_project())
    return DissectionRun.objects.create(name=name, **fields)


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def unit_create(
    run: DissectionRun, channel: int, layer: str = "conv4", *, images: int = 4, **fields: Any
) -> Unit:
    """A unit of `run` with `images` ranked top images (tiny PNGs, activations falling with rank), stored
    under `units/<run id>/` as imported images are."""
    unit = Unit.objects.create(run=run, layer=layer, channel=channel, **fields)
    png = png_bytes()
    for rank in range(images):
        image = UnitImage(unit=unit, rank=rank, max_activation=10.0 - rank)
        image.image.save(f"{run.pk}/u{unit.pk}-{rank}.png", ContentFile(png), save=False)
        image.save()
    return unit


def logged_in(user: AbstractBaseUser) -> Client:
    client = Client()
    client.force_login(user)
    return client


def staff_user(django_user_model: Any, username: str = "boss", *, project: Project | None = None) -> Any:
    """A requester who is a member of `project` (default: the shared project)."""
    user = django_user_model.objects.create_user(username, password=STAFF_PASSWORD, is_staff=True)
    (project or shared_project()).members.add(user)
    return user
