"""The first pass: one forward over any subset of the probe set, keeping per layer what the thresholds and
the top images need (a `ScanState`), and optionally caching the activations for the tally."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dissection.broden import ProbeSet
from dissection.errors import DissectionError
from dissection.quantile import candidates_needed
from dissection.sources import ActivationSource, CacheWriter, Progress
from dissection.states import ScanState, rank_images


@dataclass
class _ScanAccumulator:
    """Each channel's top `keep` raw values (compacted once enough are pending) and its top-k images."""

    layer: str
    total_images: int
    topk: int
    map_shape: tuple[int, int] | None = None
    keep: int = 0
    candidates: torch.Tensor | None = None
    pending: list[torch.Tensor] = field(default_factory=list)
    pending_count: int = 0
    top_values: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    top_images: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.int64))
    images: list[np.ndarray] = field(default_factory=list)

    def add(self, rows: np.ndarray, acts: torch.Tensor) -> None:
        n, channels, h, w = acts.shape
        if self.map_shape is None:
            self.map_shape = (h, w)
            self.keep = candidates_needed(self.total_images * h * w)
            self.candidates = acts.new_empty((channels, 0))
            self.top_values = np.full((channels, self.topk), -np.inf, np.float32)
            self.top_images = np.full((channels, self.topk), -1, np.int64)
        self.pending.append(acts.transpose(0, 1).reshape(channels, -1))
        self.pending_count += n * h * w
        if self.pending_count >= self.keep:
            self._compact()
        maxes = acts.amax(dim=(2, 3)).T.cpu().numpy()
        self.top_values, self.top_images = rank_images(
            np.concatenate([self.top_values, maxes], 1),
            np.concatenate([self.top_images, np.broadcast_to(rows, maxes.shape)], 1),
            self.topk,
        )
        self.images.append(rows)

    def _compact(self) -> torch.Tensor:
        assert self.candidates is not None
        joined = torch.cat([self.candidates, *self.pending], 1)
        self.candidates = joined.topk(min(self.keep, joined.shape[1]), dim=1, sorted=False).values
        self.pending, self.pending_count = [], 0
        return self.candidates

    def state(self) -> ScanState:
        if self.map_shape is None:
            raise DissectionError(f"layer {self.layer!r}: a scan needs at least one image")
        candidates = self._compact().sort(dim=1, descending=True).values.cpu().numpy()
        images = np.sort(np.concatenate(self.images))
        return ScanState(
            self.layer,
            self.total_images,
            self.map_shape,
            images,
            candidates,
            self.top_values,
            self.top_images,
        )


def scan(
    source: ActivationSource,
    probe: ProbeSet,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    topk: int = 20,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, ScanState]:
    """One forward pass over `indices` (default: all images) → a `ScanState` per layer.

    With `cache_dir`, each layer's activations are written to `<cache_dir>/<layer>.npy` (rows in `indices`
    order, plus `indices.npy`) for `cached_activations`.
    """
    indices = np.arange(len(probe)) if indices is None else np.asarray(indices, np.int64)
    accumulators = {layer: _ScanAccumulator(layer, len(probe), topk) for layer in source.layers}
    caches: dict[str, CacheWriter] = {}
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        np.save(Path(cache_dir) / "indices.npy", indices)
    done = 0
    try:
        for rows, outputs in source.batches(probe, indices, batch_size=batch_size):
            for layer, acts in outputs.items():
                accumulators[layer].add(rows, acts)
                if cache_dir is not None:
                    if layer not in caches:
                        path = Path(cache_dir) / f"{layer}.npy"
                        caches[layer] = CacheWriter(path, len(indices), acts.shape[1:])
                    caches[layer].write(acts.cpu().numpy())
            done += len(rows)
            if progress:
                progress(done, len(indices))
    finally:
        for cache in caches.values():
            cache.close()
    return {layer: accumulator.state() for layer, accumulator in accumulators.items()}
