"""Generated samples as the probe set of a generator dissection: the engine's label source is the segmenter.

`GeneratedSamples` is a `ProbeSet` whose images are the generator's samples and whose labels are the
segmenter's, both held in memory (no PNG is written): `load_image` and `load_labels` give exactly what the
scan, the tally and the tiles read from a Broden set. `generate_samples` runs the generator on sample
indices (latents from (seed, index), so any subset or shard is reproducible), caches the layers'
activations as the scan's cache does (an .npy per layer, for `cached_activations`), and keeps the images and
label layers. The tally must read labels in this process: call it with `workers=0`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dissection.broden import ProbeImage, ProbeSet
from dissection.convert.segment import Segmenter, SegmenterLabels
from dissection.errors import DissectionError, LayerError
from dissection.gan.models import Generator
from dissection.sources import CacheWriter, Progress


class SampleStore:
    """Images (uint8) and label layers (the segmenter's label numbers) of the samples generated so far."""

    def __init__(
        self, count: int, image_size: tuple[int, int], layers: int, mask_size: tuple[int, int]
    ) -> None:
        self.images = np.zeros((count, *image_size, 3), np.uint8)
        self.labels = np.zeros((count, layers, *mask_size), np.uint16)
        self.present = np.zeros(count, bool)

    def put(self, indices: np.ndarray, pixels: torch.Tensor, labels: np.ndarray) -> None:
        self.images[indices] = (pixels * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        self.labels[indices] = labels
        self.present[indices] = True

    def check(self, index: int) -> None:
        if not self.present[index]:
            raise DissectionError(f"sample {index} has not been generated in this process")


@dataclasses.dataclass(frozen=True, eq=False)
class GeneratedSamples(ProbeSet):
    """A probe set of `len(images)` generated samples: image i is sample i (named `sample/<i>.png` in
    result.json, though no such file is written)."""

    store: SampleStore

    def load_image(self, index: int) -> np.ndarray:
        self.store.check(index)
        return self.store.images[index]

    def load_labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(numbers, onehot) as `ProbeSet.load_labels` gives them from label PNGs."""
        self.store.check(index)
        flat = self.store.labels[index].reshape(self.store.labels.shape[1], -1).astype(np.int64)
        numbers = np.unique(flat[flat > 0])
        onehot = np.zeros((numbers.size, flat.shape[1]), np.uint8)
        position = np.arange(flat.shape[1])
        for layer in flat:
            labelled = layer > 0
            onehot[np.searchsorted(numbers, layer[labelled]), position[labelled]] = 1
        return numbers, onehot


def sample_name(index: int) -> str:
    return f"sample/{index:06d}.png"


def generated_samples(
    root: Path, count: int, segmenter: Segmenter, image_size: tuple[int, int]
) -> GeneratedSamples:
    """An empty probe set of `count` samples with the segmenter's concepts; `root` is the run's folder."""
    if count < 1:
        raise DissectionError(f"--samples must be at least 1, not {count}")
    base = ProbeSet(
        root=Path(root),
        images=tuple(ProbeImage(i, sample_name(i), (), ()) for i in range(count)),
        categories=(),
        label_names=(),
        label_category=np.zeros(0, np.int64),
        image_size=image_size,
        mask_size=segmenter.mask_size,
    )
    relabelled = SegmenterLabels(segmenter).relabel(base)
    store = SampleStore(count, image_size, len(segmenter.thresholds), segmenter.mask_size)
    return GeneratedSamples(
        **{f.name: getattr(relabelled, f.name) for f in dataclasses.fields(ProbeSet)}, store=store
    )


def generate_samples(
    generator: Generator,
    segmenter: Segmenter,
    samples: GeneratedSamples,
    *,
    seed: int,
    layers: Sequence[str],
    cache_dir: Path,
    indices: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> None:
    """Generate `indices` (default: all samples), segment them into `samples`, and write each layer's
    activations to `cache_dir/<layer>.npy` (rows in `indices` order, plus `indices.npy`)."""
    indices = np.arange(len(samples)) if indices is None else np.asarray(indices, np.int64)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cache_dir / "indices.npy", indices)
    caches: dict[str, CacheWriter] = {}
    try:
        for start in range(0, len(indices), batch_size):
            rows = indices[start : start + batch_size]
            pixels, recorded = generator.run(generator.latents(seed, rows), record=layers)
            if tuple(pixels.shape[2:]) != samples.image_size:
                raise DissectionError(
                    f"generator {generator.where} made {tuple(pixels.shape[2:])} images after "
                    f"{samples.image_size} ones; its image size must not change"
                )
            samples.store.put(rows, pixels, segmenter.layers(pixels))
            for layer in layers:
                acts = recorded[layer]
                if acts.dim() != 4:
                    raise LayerError(
                        f"generator {generator.where}: layer {layer!r} outputs {tuple(acts.shape)}; "
                        "dissection needs N x C x H x W"
                    )
                if layer not in caches:
                    caches[layer] = CacheWriter(
                        cache_dir / f"{layer}.npy", len(indices), tuple(acts.shape[1:])
                    )
                caches[layer].write(acts.float().cpu().numpy())
            if progress:
                progress(start + len(rows), len(indices))
    finally:
        for cache in caches.values():
            cache.close()
