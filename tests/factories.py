"""Builders the test suites share: tiny images, units with their image sets, logged-in staff clients."""

from __future__ import annotations

import io
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.test import Client
from PIL import Image

from runs.models import DissectionRun, Unit, UnitImage

STAFF_PASSWORD = "pw-for-tests-1234"


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def unit_create(
    run: DissectionRun, channel: int, layer: str = "conv4", *, images: int = 4, **fields: Any
) -> Unit:
    """A unit of `run` with `images` ranked top images (tiny PNGs, activations falling with rank)."""
    unit = Unit.objects.create(run=run, layer=layer, channel=channel, **fields)
    png = png_bytes()
    for rank in range(images):
        image = UnitImage(unit=unit, rank=rank, max_activation=10.0 - rank)
        image.image.save(f"u{unit.pk}-{rank}.png", ContentFile(png), save=False)
        image.save()
    return unit


def logged_in(user: AbstractBaseUser) -> Client:
    client = Client()
    client.force_login(user)
    return client


def staff_user(django_user_model: Any, username: str = "boss") -> Any:
    return django_user_model.objects.create_user(username, password=STAFF_PASSWORD, is_staff=True)
