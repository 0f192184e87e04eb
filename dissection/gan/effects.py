"""Causal effects of a concept's units (GAN Dissection's tests): remove them, or insert them, and segment.

For concept c and its n units of highest IoU (n = 1, 2, 4, … up to `limit`):

- ablation: the units are set to 0 at every position of every sample; a sample's effect is the share of
  its pixels segmented as c before, minus after. The average causal effect (ACE) is the mean over samples.
- insertion: in the samples with no pixel of c inside `region` (fractions x0, y0, x1, y1 of the image),
  the units are set, at the layer positions whose centres lie in the region, to their mean activation where
  c is present (over the layer positions, weighted by the share of each position's pixels segmented as c,
  across all samples); a sample's effect is the share of the region's pixels segmented as c afterwards.

Each mean comes with a 95 % confidence interval over samples (normal approximation: mean ± 1.96 s/√m).
The control: `controls` random sets of n units of the same layer (drawn from (seed, n, k)); a sample's
control effect is its mean over those sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dissection.convert.segment import Segmenter
from dissection.errors import DissectionError
from dissection.gan.models import Edit, Generator
from dissection.sources import Progress

EFFECT_SCHEMA = 1
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A mean over samples and its 95 % confidence interval."""

    mean: float
    low: float
    high: float
    samples: int

    @classmethod
    def of(cls, values: np.ndarray) -> Estimate:
        values = np.asarray(values, np.float64)
        if values.size == 0:
            raise DissectionError("an effect needs at least one sample")
        mean = float(values.mean())
        half = Z_95 * float(values.std(ddof=1)) / math.sqrt(values.size) if values.size > 1 else 0.0
        return cls(mean, mean - half, mean + half, int(values.size))

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "samples": self.samples}


def set_sizes(limit: int, units: int) -> list[int]:
    """1, 2, 4, … up to `limit` (and at most the layer's units)."""
    if limit < 1:
        raise DissectionError(f"--limit must be at least 1 unit, not {limit}")
    top = min(limit, units)
    return [2**k for k in range(int(math.log2(top)) + 1)]


def region_cells(region: Sequence[float], size: tuple[int, int]) -> torch.Tensor:
    """h x w bool: the cells of a grid whose centres lie in the region (x0, y0, x1, y1 as fractions)."""
    x0, y0, x1, y1 = (float(v) for v in region)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise DissectionError(
            f"region {tuple(region)} must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1, same for y"
        )
    rows = (torch.arange(size[0]) + 0.5) / size[0]
    cols = (torch.arange(size[1]) + 0.5) / size[1]
    return ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]


def ablate(channels: Sequence[int]) -> Edit:
    index = torch.as_tensor(list(channels), dtype=torch.int64)

    def edit(acts: torch.Tensor) -> torch.Tensor:
        acts = acts.clone()
        acts[:, index.to(acts.device)] = 0.0
        return acts

    return edit


def insert(channels: Sequence[int], values: torch.Tensor, cells: torch.Tensor) -> Edit:
    """Set the channels to `values[channel]` at the cells (h x w bool) of the layer."""
    index = torch.as_tensor(list(channels), dtype=torch.int64)

    def edit(acts: torch.Tensor) -> torch.Tensor:
        if tuple(acts.shape[2:]) != tuple(cells.shape):
            raise DissectionError(
                f"the layer's maps are {tuple(acts.shape[2:])}, the region's {tuple(cells.shape)}"
            )
        acts = acts.clone()
        chosen = index.to(acts.device)
        fill = values.to(acts)[chosen][None, :, None, None]
        acts[:, chosen] = torch.where(cells.to(acts.device), fill, acts[:, chosen])
        return acts

    return edit


class ConceptProbe:
    """Generates samples and measures the share of pixels segmented as one concept, optionally inside a
    region and with a layer edited."""

    def __init__(
        self,
        generator: Generator,
        segmenter: Segmenter,
        layer: str,
        number: int,
        latents: torch.Tensor,
        batch_size: int,
    ) -> None:
        found = np.argwhere(segmenter.numbers == number)
        if found.size == 0:
            raise DissectionError(f"label number {number} is not one of the segmenter's")
        self.threshold_layer = int(found[0][1])
        self.generator, self.segmenter, self.layer = generator, segmenter, layer
        self.number, self.latents, self.batch_size = number, latents, batch_size

    def masks(self, pixels: torch.Tensor) -> torch.Tensor:
        """N x sh x sw bool: the pixels segmented as the concept."""
        layers = self.segmenter.layers(pixels)
        return torch.from_numpy(layers[:, self.threshold_layer] == self.number)

    def shares(self, rows: np.ndarray, edit: Edit | None, region: torch.Tensor | None) -> np.ndarray:
        """Per sample of `rows`, the share of its pixels (inside `region`: mask-size bool) segmented as c."""
        out = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            pixels, _ = self.generator.run(
                self.latents[chunk], edits={self.layer: edit} if edit is not None else None
            )
            masks = self.masks(pixels)
            if region is None:
                out.append(masks.flatten(1).double().mean(1).numpy())
            else:
                out.append((masks[:, region]).double().mean(1).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def images(self, rows: np.ndarray, edit: Edit | None) -> torch.Tensor:
        pixels, _ = self.generator.run(
            self.latents[rows], edits={self.layer: edit} if edit is not None else None
        )
        return pixels.cpu()


def causal_effects(
    generator: Generator,
    segmenter: Segmenter,
    *,
    layer: str,
    concept: dict[str, Any],
    ranking: np.ndarray,
    samples: int = 200,
    seed: int = 0,
    limit: int = 16,
    controls: int = 3,
    region: Sequence[float] = (0.25, 0.25, 0.75, 0.75),
    grid: int = 6,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(effects.json document, before/after images): ablation and insertion of the concept's top-n units
    and of random controls. `concept` is the concept's gan.json entry, `ranking` the layer's channels by IoU
    with it (best first). Images: `ablation_before/after` of the samples with most of c, `insertion_before/
    after` of the first samples without c in the region, for the largest n."""
    if samples < 2:
        raise DissectionError(f"--samples must be at least 2 for a confidence interval, not {samples}")
    if controls < 1:
        raise DissectionError(f"--controls must be at least 1 random set, not {controls}")
    rows = np.arange(samples)
    latents = generator.latents(seed, rows)
    probe = ConceptProbe(generator, segmenter, layer, int(concept["number"]), latents, batch_size)
    units = int(ranking.size)
    sizes = set_sizes(limit, units)
    mask_region = region_cells(region, segmenter.mask_size)

    # The unedited samples: c's share, and each unit's mean activation where c is present.
    before, inside_before = [], []
    weighted = torch.zeros(units, dtype=torch.float64)
    weight = 0.0
    layer_size: tuple[int, int] | None = None
    for start in range(0, samples, batch_size):
        chunk = rows[start : start + batch_size]
        pixels, recorded = generator.run(latents[chunk], record=[layer])
        acts = recorded[layer].double().cpu()
        if acts.shape[1] != units:
            raise DissectionError(f"layer {layer!r} has {acts.shape[1]} units; gan.json ranks {units}")
        layer_size = (int(acts.shape[2]), int(acts.shape[3]))
        masks = probe.masks(pixels)
        before.append(masks.flatten(1).double().mean(1).numpy())
        inside_before.append(masks[:, mask_region].any(1).numpy())
        share = F.interpolate(masks[:, None].double(), size=layer_size, mode="area")
        weighted += (acts * share).sum((0, 2, 3))
        weight += float(share.sum())
    assert layer_size is not None
    share_before = np.concatenate(before)
    absent = rows[~np.concatenate(inside_before)]
    layer_region = region_cells(region, layer_size)
    if not bool(layer_region.any()):
        raise DissectionError(
            f"region {tuple(region)} holds no position of the {layer_size} maps of {layer!r}"
        )
    values = weighted / weight if weight > 0 else None

    total = len(sizes) * (1 + controls) * (samples + len(absent))
    done = 0

    def tick(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    curves = []
    for n in sizes:
        top = [int(c) for c in ranking[:n]]
        random_sets = [
            sorted(int(c) for c in np.random.default_rng([seed, n, k]).choice(units, n, replace=False))
            for k in range(controls)
        ]
        ablation = share_before - probe.shares(rows, ablate(top), None)
        tick(samples)
        control = np.mean([share_before - probe.shares(rows, ablate(s), None) for s in random_sets], 0)
        tick(samples * controls)
        curve: dict[str, Any] = {
            "units": n,
            "channels": top,
            "control_channels": random_sets,
            "ablation": Estimate.of(ablation).as_dict(),
            "ablation_control": Estimate.of(control).as_dict(),
            "insertion": None,
            "insertion_control": None,
        }
        if values is not None and absent.size:
            inserted = probe.shares(absent, insert(top, values, layer_region), mask_region)
            tick(len(absent))
            inserted_control = np.mean(
                [probe.shares(absent, insert(s, values, layer_region), mask_region) for s in random_sets], 0
            )
            tick(len(absent) * controls)
            curve["insertion"] = Estimate.of(inserted).as_dict()
            curve["insertion_control"] = Estimate.of(inserted_control).as_dict()
        curves.append(curve)

    largest = [int(c) for c in ranking[: sizes[-1]]]
    shown = rows[np.argsort(-share_before, kind="stable")][: min(grid, samples)]
    images = {
        "ablation_before": probe.images(shown, None),
        "ablation_after": probe.images(shown, ablate(largest)),
    }
    if values is not None and absent.size:
        first = absent[:grid]
        images["insertion_before"] = probe.images(first, None)
        images["insertion_after"] = probe.images(first, insert(largest, values, layer_region))
    document = {
        "schema": EFFECT_SCHEMA,
        "layer": layer,
        "concept": concept["label"],
        "category": concept["category"],
        "seed": seed,
        "samples": samples,
        "samples_with_concept": int((share_before > 0).sum()),
        "share_before": float(share_before.mean()),
        "region": [float(v) for v in region],
        "insertion_samples": int(absent.size),
        "insertion_values": None if values is None else [float(values[c]) for c in largest],
        "insertion_note": None
        if values is not None and absent.size
        else "the concept is never segmented in these samples"
        if values is None
        else "every sample has the concept inside the region",
        "controls": controls,
        "curves": curves,
        "grid_samples": {"ablation": shown.tolist(), "insertion": absent[:grid].tolist()},
    }
    return document, images
