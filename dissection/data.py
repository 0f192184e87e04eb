"""Decoding probe images and label layers in DataLoader workers.

A worker never raises: a bad file comes back as an error message that the main process raises as a
`ProbeSetError`, so the user sees the file and row instead of a worker traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dissection.broden import ProbeSet
from dissection.errors import ProbeSetError


def default_workers() -> int:
    """Decoding workers: one core is left to the model."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class ImageDataset(Dataset[tuple[int, np.ndarray | str]]):
    """(image index, H x W x 3 uint8 array) for the given image indices, or (index, error message)."""

    def __init__(self, probe: ProbeSet, indices: Sequence[int] | np.ndarray) -> None:
        self.probe, self.indices = probe, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, np.ndarray | str]:
        index = self.indices[position]
        try:
            return index, self.probe.load_image(index)
        except ProbeSetError as error:
            return index, str(error)


@dataclass(frozen=True)
class ImageLabels:
    """An image's labels, compressed for counting: the label numbers present, each one's pixel count, the
    distinct label sets of its pixels (`combos`: sets x labels, float32 0/1) and each pixel's set index.
    Rebuilt in the main process from the arrays a worker sends (`_LabelArrays`)."""

    index: int
    numbers: np.ndarray
    truth: np.ndarray
    combos: torch.Tensor
    pixel_combo: torch.Tensor


class _LabelArrays(Dataset[tuple[Any, ...]]):
    """An image's labels as plain NumPy arrays (index, numbers, truth, combos, pixel_combo), or (index, error
    message). Arrays cross from a worker by pickling, not as one shared-memory file descriptor per tensor."""

    def __init__(self, probe: ProbeSet, indices: Sequence[int] | np.ndarray) -> None:
        self.probe, self.indices = probe, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Any, ...]:
        index = self.indices[position]
        try:
            numbers, onehot = self.probe.load_labels(index)
        except ProbeSetError as error:
            return index, str(error)
        combos, pixel_combo = label_sets(onehot)
        return index, numbers, onehot.sum(1, dtype=np.int64), combos, pixel_combo


def label_sets(onehot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct columns of a labels x pixels 0/1 matrix (sets x labels, float32) and each pixel's set."""
    n = onehot.shape[0]
    if n > 63:
        sets, inverse = np.unique(onehot.T, axis=0, return_inverse=True)
        return sets.astype(np.float32), inverse.reshape(-1).astype(np.int64)
    bits = np.left_shift(np.int64(1), np.arange(n, dtype=np.int64))
    keys = bits @ onehot.astype(np.int64)
    if n <= 16:
        counts = np.bincount(keys, minlength=1 << n)
        unique = np.flatnonzero(counts)
        rank = np.zeros(1 << n, np.int64)
        rank[unique] = np.arange(unique.size)
        inverse = rank[keys]
    else:
        unique, inverse = np.unique(keys, return_inverse=True)
    sets = (np.right_shift(unique[:, None], np.arange(n, dtype=np.int64)) & 1).astype(np.float32)
    return sets, inverse.astype(np.int64)


def _as_list(batch: list[Any]) -> list[Any]:
    """Collate nothing: items differ in shape, and an error message must reach the main process as it is."""
    return batch


def image_batches(
    probe: ProbeSet, indices: Sequence[int] | np.ndarray, *, batch_size: int, workers: int | None = None
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (image indices, B x 3 x H x W float tensor in [0, 1]) in the order of `indices`."""
    loader = DataLoader(
        ImageDataset(probe, indices),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=_as_list,
        num_workers=default_workers() if workers is None else workers,
    )
    for batch in loader:
        for _, item in batch:
            if isinstance(item, str):
                raise ProbeSetError(item)
        indices_array = np.array([index for index, _ in batch], np.int64)
        pixels = torch.from_numpy(np.stack([item for _, item in batch]))
        yield indices_array, pixels.permute(0, 3, 1, 2).float().div_(255.0)


def label_stream(
    probe: ProbeSet, indices: Sequence[int] | np.ndarray, *, batch_size: int, workers: int | None = None
) -> Iterator[list[ImageLabels]]:
    """Lists of `ImageLabels` in the order of `indices`, with the workers started (and decoding) before this
    returns, so that labels are decoded while the caller computes."""
    loader = DataLoader(
        _LabelArrays(probe, indices),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=_as_list,
        num_workers=default_workers() if workers is None else workers,
    )
    return _label_items(iter(loader))


class LabelSource(Protocol):
    """Where the tally's labels come from instead of the probe set's label PNGs: a segmenter labelling the
    images (`dissection.convert.segment.SegmenterLabels`), for an image folder or a generator's samples.
    `relabel(probe)` is the probe set with the source's labels, categories and mask size; `stream` yields
    what `label_stream` yields for it."""

    def relabel(self, probe: ProbeSet) -> ProbeSet: ...

    def stream(
        self,
        probe: ProbeSet,
        indices: Sequence[int] | np.ndarray,
        *,
        batch_size: int,
        workers: int | None = 0,
    ) -> Iterator[list[ImageLabels]]: ...


def _label_items(batches: Iterator[list[tuple[Any, ...]]]) -> Iterator[list[ImageLabels]]:
    for batch in batches:
        for item in batch:
            if len(item) == 2:
                raise ProbeSetError(item[1])
        yield [
            ImageLabels(index, numbers, truth, torch.from_numpy(combos), torch.from_numpy(pixel_combo))
            for index, numbers, truth, combos, pixel_combo in batch
        ]
