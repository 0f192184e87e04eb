"""Full-size tiles of dissected units, made on demand from what the render step stored (result.json and the
units' maps in maps.npy, under the layer's report prefix) and the probe images: no model is loaded. The
records are written by `runs.services.unit_tiles_ensure`; this module only makes and stores the files.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from itertools import groupby
from pathlib import Path, PurePosixPath
from typing import Any, cast

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image

from dissection.errors import DissectionError, ProbeSetError
from dissection.render import encode_jpeg, unit_tiles
from runs.errors import RunError
from runs.models import DissectionRun, ProbeSet, Unit
from runs.storage import inside, probe_set_root, store_bytes


def unit_tiles_make(units: Iterable[Unit]) -> dict[int, dict[int, str]]:
    """Per unit id, the stored name of each rank's tile; each layer's result.json and maps.npy are read once.
    The units must come with `run__probe_set` selected (a generator run's come from its generator)."""
    made: dict[int, dict[int, str]] = {}
    for (_, layer), group in groupby(units, key=lambda unit: (unit.run_id, unit.layer)):
        members = list(group)
        run = members[0].run
        report = run.report.get(layer)
        if not report or (run.probe_set is None and run.segmenter_id is None):
            raise RunError(f"Unit {members[0].channel + 1} of {layer}: its run {run.name!r} has no report.")
        prefix = str(PurePosixPath(report).parent)
        document = _stored_json(f"{prefix}/result.json")
        maps = _stored_maps(f"{prefix}/{document.get('maps', 'maps.npy')}", layer)
        for unit in members:
            entry = document["units"][unit.channel]
            where = f"Unit {unit.channel + 1} of {layer} in run {run.name!r}"
            images = _unit_images(run, entry["images"], where)
            tiles = unit_tiles(images, maps[unit.channel, : len(images)], entry["threshold"])
            made[unit.pk] = {
                rank: store_bytes(f"{prefix}/{image['tile']}", encode_jpeg(tile))
                for rank, (image, tile) in enumerate(zip(entry["images"], tiles, strict=True))
            }
    return made


def _unit_images(run: DissectionRun, images: list[dict[str, Any]], where: str) -> np.ndarray:
    """The unit's top images: probe images, or a generator run's samples drawn again from (seed, index)."""
    if run.probe_set is not None:
        return np.stack([_probe_image(run.probe_set, image["image"], where) for image in images])
    from runs.networks import generator_images

    assert run.network is not None, "a generator run has its generator"
    try:
        return generator_images(run.network, run.seed, [int(image["index"]) for image in images])
    except DissectionError as exc:
        raise RunError(f"{where}: its samples cannot be drawn again ({exc}).") from None


def _stored_json(key: str) -> dict[str, Any]:
    try:
        with default_storage.open(key, "rb") as handle:
            document: dict[str, Any] = json.load(handle)
    except OSError as exc:
        raise RunError(f"{key}: cannot be read ({exc.strerror or exc}).") from None
    return document


def _stored_maps(key: str, layer: str) -> np.ndarray:
    try:
        with default_storage.open(key, "rb") as handle:
            return np.load(io.BytesIO(handle.read()), allow_pickle=False)
    except (OSError, ValueError):
        raise RunError(f"Layer {layer}: the maps its tiles are made from ({key}) cannot be read.") from None


def _probe_image(probe_set: ProbeSet, relative: str, where: str) -> np.ndarray:
    """One probe image as H x W x 3 uint8 RGB, as the dissection read it (`ProbeSet.load_image`); from an S3
    probe set only that object is fetched."""
    try:
        if probe_set.path.startswith("s3://"):
            inside(Path("/probe-set/images"), relative, what=relative)
            source: Any = io.BytesIO(_s3_object(probe_set.path, f"images/{relative}"))
        else:
            source = inside(probe_set_root(probe_set) / "images", relative, what=relative)
        with Image.open(source) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ProbeSetError, Image.DecompressionBombError) as exc:
        raise RunError(f"{where}: probe image {relative!r} cannot be read ({exc}).") from None


def _s3_object(path: str, relative: str) -> bytes:
    """One object under an s3://bucket/prefix probe set."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = path.removeprefix("s3://").partition("/")
    options = cast(dict[str, Any], settings.STORAGES["default"]).get("OPTIONS", {})
    endpoint = options.get("endpoint_url") or os.environ.get("S3_ENDPOINT_URL")
    key = f"{prefix.rstrip('/')}/{relative}" if prefix else relative
    try:
        client = boto3.client("s3", endpoint_url=endpoint or None)
        body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise OSError(f"s3://{bucket}/{key}: {exc}") from None
    return body
