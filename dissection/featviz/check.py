"""Did it work? Each optimized image against the probe set's best natural image for the same unit.

The statistic is the one result.json stores for a unit's top probe images (`images[*].activation`): the
maximum of the unit's map. The *relative activation* of an image is its unit's statistic over the unit's best
probe-set value, as the human studies of feature visualizations report it: above 1, the image drives the unit
harder than any natural image of the probe set. *Selectivity* is the share of the layer's other units that the
image drives less than its own unit, each unit's statistic divided by that unit's own best probe value so that
units of different scales compare; 1 means the image is about its unit and no other. Units whose best probe
value is not positive (never active on the probe set) have no scale and are left out of both figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dissection.broden import load_probe_set
from dissection.data import image_batches
from dissection.errors import DissectionError
from dissection.featviz.render import Visualization, layer_reader, normalize
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.sources import Progress, resolve_device


def best_from_result(path: str | Path, layer: str, channels: int) -> np.ndarray:
    """Each channel's best probe-set activation from a dissection's result.json (NaN for a unit it lists no
    images for)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DissectionError(f"{path}: not a readable result.json ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("units"), list):
        raise DissectionError(f"{path}: not a dissection result.json (no 'units' list)")
    if document.get("layer") != layer:
        raise DissectionError(f"{path} is a dissection of layer {document.get('layer')!r}, not {layer!r}")
    if len(document["units"]) != channels:
        raise DissectionError(
            f"{path} lists {len(document['units'])} units, but layer {layer!r} has {channels} channels"
        )
    best = np.full(channels, np.nan)
    for row, unit in enumerate(document["units"]):
        try:
            channel = int(unit["channel"])
            values = [float(image["activation"]) for image in unit["images"]]
        except (KeyError, TypeError, ValueError):
            raise DissectionError(f"{path}: unit row {row} has no channel or image activations") from None
        if not 0 <= channel < channels:
            raise DissectionError(f"{path}: unit row {row} names channel {channel} of {channels}")
        if values:
            best[channel] = max(values)
    return best


def best_from_probe_set(
    model: nn.Module,
    layer: str,
    probe_set: str | Path,
    *,
    device: str | torch.device = "auto",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    batch_size: int = 32,
    workers: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Each channel's best activation over a probe set, as a dissection's scan takes it: each image at its own
    size, normalized by mean/std, the max of the map, the max over images."""
    probe = load_probe_set(probe_set)
    target = resolve_device(device) if isinstance(device, str) else device
    model = model.eval().to(target)
    best: torch.Tensor | None = None
    done = 0
    with torch.no_grad(), layer_reader(model, layer) as read:
        for _, pixels in image_batches(probe, range(len(probe)), batch_size=batch_size, workers=workers):
            batch_best = read(normalize(pixels.to(target), mean, std)).float().amax((2, 3)).amax(0).cpu()
            best = batch_best if best is None else torch.maximum(best, batch_best)
            done += len(pixels)
            if progress:
                progress(done, len(probe))
    if best is None:
        raise DissectionError(f"probe set {probe_set} holds no images")
    return best.double().numpy()


@dataclass(frozen=True)
class Check:
    """Per image (rows of the `Visualization`): relative activation and selectivity, NaN where undefined."""

    relative: np.ndarray
    selectivity: np.ndarray

    def units(self, vis: Visualization) -> dict[int, tuple[float, float]]:
        """Per channel: the mean relative activation and selectivity of its positive images."""
        out: dict[int, tuple[float, float]] = {}
        pairs = list(zip(vis.channels, vis.directions, strict=True))
        for channel in dict.fromkeys(vis.channels):
            rows = [i for i, pair in enumerate(pairs) if pair == (channel, "positive")]
            out[channel] = (_mean(self.relative[rows]), _mean(self.selectivity[rows]))
        return out

    def summary(self, vis: Visualization) -> dict[str, Any]:
        """Median relative activation over units, the share of units above 1, median selectivity."""
        per_unit = self.units(vis)
        relative = np.array([r for r, _ in per_unit.values() if not math.isnan(r)])
        selective = np.array([s for _, s in per_unit.values() if not math.isnan(s)])
        return {
            "units": len(per_unit),
            "units_with_figures": int(relative.size),
            "median_relative_activation": float(np.median(relative)) if relative.size else None,
            "share_above_1": float((relative > 1).mean()) if relative.size else None,
            "median_selectivity": float(np.median(selective)) if selective.size else None,
        }


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size and not np.isnan(values).all() else math.nan


def check(vis: Visualization, best: np.ndarray) -> Check:
    """Relative activation and selectivity of every image, given each channel's best probe activation."""
    best = np.asarray(best, np.float64)
    if best.shape != (vis.layer_max.shape[1],):
        raise DissectionError(
            f"best activations for {best.shape[0]} units, but layer {vis.layer!r} has "
            f"{vis.layer_max.shape[1]}"
        )
    scale = np.where(best > 0, best, np.nan)
    normalized = vis.layer_max.double().numpy() / scale[None, :]
    channels = np.asarray(vis.channels)
    rows = np.arange(len(channels))
    own = normalized[rows, channels]
    others = np.ones_like(normalized, dtype=bool)
    others[rows, channels] = False
    others &= ~np.isnan(normalized)
    below = (normalized < own[:, None]) & others
    with np.errstate(invalid="ignore", divide="ignore"):
        selectivity = below.sum(1) / others.sum(1)
    selectivity[np.isnan(own)] = np.nan
    return Check(relative=own, selectivity=selectivity)
