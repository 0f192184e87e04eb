"""Decoding probe images and label layers in DataLoader workers.

A worker never raises: a bad file comes back as an error message that the main process raises as a
`ProbeSetError`, so the user sees the file and row instead of a worker traceback.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dissection.broden import ProbeSet
from dissection.errors import ProbeSetError


def default_workers() -> int:
    """Decoding workers: one core is left to the model."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class ImageDataset(Dataset):
    """(image index, H x W x 3 uint8 array) for the given image indices, or (index, error message)."""

    def __init__(self, probe: ProbeSet, indices: Sequence[int]) -> None:
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
    """An image's labels: the numbers present, each label's pixel count, and a float32 tensor of
    (len(numbers) + 1) x pixels: the label x pixel one-hot plus a last row of ones, so that one matrix
    product gives both |M_k ∩ L_c| and |M_k|. Built in the worker; tensors cross to the main process
    through shared memory."""

    index: int
    numbers: np.ndarray
    onehot: torch.Tensor
    truth: np.ndarray


class LabelDataset(Dataset):
    """`ImageLabels` for the given image indices, or (index, error message)."""

    def __init__(self, probe: ProbeSet, indices: Sequence[int]) -> None:
        self.probe, self.indices = probe, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> ImageLabels | tuple[int, str]:
        index = self.indices[position]
        try:
            numbers, onehot = self.probe.load_labels(index)
        except ProbeSetError as error:
            return index, str(error)
        rows = torch.ones((numbers.size + 1, onehot.shape[1]), dtype=torch.float32)
        rows[:-1] = torch.from_numpy(onehot)
        return ImageLabels(index, numbers, rows, onehot.sum(1, dtype=np.int64))


def _as_list(batch: list) -> list:
    return batch


def image_batches(
    probe: ProbeSet, indices: Sequence[int], *, batch_size: int, workers: int | None = None
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (image indices, B x 3 x H x W float tensor in [0, 1]) in the order of `indices`."""
    loader = DataLoader(
        ImageDataset(probe, indices), batch_size=batch_size, shuffle=False, collate_fn=_as_list,
        num_workers=default_workers() if workers is None else workers,
    )
    for batch in loader:
        for index, item in batch:
            if isinstance(item, str):
                raise ProbeSetError(item)
        indices_array = np.array([index for index, _ in batch], np.int64)
        pixels = torch.from_numpy(np.stack([item for _, item in batch]))
        yield indices_array, pixels.permute(0, 3, 1, 2).float().div_(255.0)


def label_batches(
    probe: ProbeSet, indices: Sequence[int], *, batch_size: int, workers: int | None = None
) -> Iterator[list[ImageLabels]]:
    """Yield lists of `ImageLabels` in the order of `indices`."""
    loader = DataLoader(
        LabelDataset(probe, indices), batch_size=batch_size, shuffle=False, collate_fn=_as_list,
        num_workers=default_workers() if workers is None else workers,
    )
    for batch in loader:
        for item in batch:
            if isinstance(item, tuple):
                raise ProbeSetError(item[1])
        yield batch
