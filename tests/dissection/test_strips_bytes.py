"""The strips are pasted together from PIL thumbnails through their masks (no tile array): the files must be
byte for byte the JPEG of the strip the array rule gives (thumbnail inside the mask, dimmed outside, tiles
side by side on white), for images larger than a thumbnail and for images that are thumbnail-sized."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dissection import render
from dissection.broden import load_probe_set
from dissection.synth import make_probe_set


def _strip_as_array(images: np.ndarray, maps: np.ndarray, threshold: float) -> np.ndarray:
    """The strip by the array rule, written out slowly: each tile, then the tiles on a white canvas."""
    height, width = images.shape[1:3]
    up = F.interpolate(
        torch.from_numpy(maps.astype(np.float32)).unsqueeze(1),
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[:, 0]
    canvas = np.full((height, len(images) * (width + 4) - 4, 3), 255, np.uint8)
    for i, (image, mapped) in enumerate(zip(images, up.numpy(), strict=True)):
        for y in range(height):
            for x in range(width):
                inside = mapped[y, x] > np.float32(threshold)
                pixel = image[y, x] if inside else np.rint(image[y, x] * 0.2).astype(np.uint8)
                canvas[y, i * (width + 4) + x] = pixel
    return canvas


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [128, 64])
def test_strip_files_are_the_jpeg_of_the_array_rule(tmp_path: Path, size: int) -> None:
    probe = load_probe_set(make_probe_set(tmp_path / "probe", images=6, size=size, seed=2))
    rng = np.random.default_rng(size)
    units = []
    for u, count in enumerate((3, 1, 0, 6)):
        rows = [int(i) for i in rng.permutation(6)[:count]]
        units.append(
            {
                "channel": u,
                "threshold": float(rng.uniform(0.3, 0.7)),
                "strip": f"strips/unit_{u + 1:04d}.jpg",
                "images": [{"index": index} for index in rows],
            }
        )
    unit_maps = rng.random((len(units), 6, 5, 5)).astype(np.float32)
    render.render_strips({"units": units}, probe, tmp_path, unit_maps)
    thumb = render.thumbnail_size(probe.image_size)
    for u, unit in enumerate(units):
        path = tmp_path / unit["strip"]
        shown = [entry["index"] for entry in unit["images"]][: render.STRIP_IMAGES]
        if not shown:
            assert not path.exists()
            continue
        images = np.stack(
            [
                np.asarray(
                    Image.fromarray(probe.load_image(i)).resize(
                        (thumb[1], thumb[0]), Image.Resampling.BILINEAR
                    )
                )
                if thumb != probe.image_size
                else probe.load_image(i)
                for i in shown
            ]
        )
        expected = _strip_as_array(images, unit_maps[u, : len(shown)], unit["threshold"])
        assert path.read_bytes() == _jpeg(expected), unit["strip"]
