"""The second pass: given T_k, sum I[k,c] = Σ|M_k ∩ L_c|, G[c] = Σ|L_c| and A[k,cat] = Σ|M_k| over images.

(Image, channel) pairs whose map never exceeds T_k are skipped; the label layers are decoded in worker
processes while the mask pixels of the batch are found. `paper` adds |M_k| to A for every category with a
label in the image; `netdissect-lite` only for categories with a label under the mask.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dissection.broden import ProbeSet
from dissection.data import ImageLabels, LabelSource, default_workers, label_stream
from dissection.errors import DissectionError, LayerError
from dissection.masks import BilinearAxis, bilinear_axis, mask_pixels
from dissection.quantile import check_semantics, float32_below
from dissection.sources import ActivationSource, Progress
from dissection.states import TallyState

_Masks = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class _LayerSums:
    """One layer's thresholds (float64, and on the device as float64 and float32) and running sums."""

    t64: np.ndarray
    t64_tensor: torch.Tensor
    t32: torch.Tensor
    intersect: torch.Tensor  # channels x labels int64
    activation: torch.Tensor  # channels x categories int64
    axes: tuple[BilinearAxis, BilinearAxis] | None = None


def _category_onehot(probe: ProbeSet, device: torch.device) -> torch.Tensor:
    onehot = torch.zeros((probe.num_labels, len(probe.categories)), dtype=torch.float32)
    known = np.nonzero(probe.label_category >= 0)[0]
    onehot[known, probe.label_category[known]] = 1.0
    return onehot.to(device)


def tally(
    source: ActivationSource,
    probe: ProbeSet,
    thresholds: Mapping[str, np.ndarray],
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    semantics: str = "paper",
    batch_size: int = 32,
    workers: int | None = None,
    progress: Progress | None = None,
    label_source: LabelSource | None = None,
) -> dict[str, TallyState]:
    """Sum I, G and A over `indices` (default: all images) for every layer of `source`, given T_k per
    layer. The labels are the probe set's PNGs, or what `label_source` streams (`probe` then being
    `label_source.relabel` of the images' probe set)."""
    check_semantics(semantics)
    indices = np.arange(len(probe)) if indices is None else np.asarray(indices, np.int64)
    device = source.device
    pixels = probe.mask_size[0] * probe.mask_size[1]
    if pixels >= 2**24:
        raise DissectionError(f"mask size {probe.mask_size} is too large for exact float32 counting")
    categories = _category_onehot(probe, device)
    labels, cats = probe.num_labels, len(probe.categories)
    sums = {}
    for layer in source.layers:
        if layer not in thresholds:
            raise DissectionError(f"no thresholds for layer {layer!r}")
        t64 = np.asarray(thresholds[layer], np.float64)
        sums[layer] = _LayerSums(
            t64,
            torch.from_numpy(t64).to(device),
            torch.from_numpy(float32_below(t64)).to(device),
            torch.zeros((t64.size, labels), dtype=torch.int64, device=device),
            torch.zeros((t64.size, cats), dtype=torch.int64, device=device),
        )
    truth = np.zeros(labels, np.int64)
    threads = torch.get_num_threads()
    # The label workers decode while the tally counts: leave them their cores (spinning intra-op threads on an
    # oversubscribed CPU slow both down).
    label_workers = default_workers() if workers is None else workers
    if device.type == "cpu" and label_workers > 0:
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - label_workers)))
    try:
        _tally_all(
            source,
            probe,
            indices,
            batch_size,
            workers,
            categories,
            sums,
            truth,
            semantics,
            progress,
            label_source,
        )
    finally:
        torch.set_num_threads(threads)
    images = np.sort(indices)
    return {
        layer: TallyState(
            layer,
            semantics,
            s.t64,
            images,
            s.intersect.cpu().numpy(),
            truth.copy(),
            s.activation.cpu().numpy(),
        )
        for layer, s in sums.items()
    }


def _tally_all(
    source: ActivationSource,
    probe: ProbeSet,
    indices: np.ndarray,
    batch_size: int,
    workers: int | None,
    categories: torch.Tensor,
    sums: dict[str, _LayerSums],
    truth: np.ndarray,
    semantics: str,
    progress: Progress | None,
    label_source: LabelSource | None,
) -> None:
    device = source.device
    done = 0
    # The label workers start now; each batch's mask pixels are found before its labels are waited for.
    stream = label_stream if label_source is None else label_source.stream
    labels_of_batches = stream(probe, indices, batch_size=batch_size, workers=workers)
    for rows, outputs in source.batches(probe, indices, batch_size=batch_size):
        masks = {}
        for layer, acts in outputs.items():
            s = sums[layer]
            if acts.shape[1] != s.t64.size:
                raise LayerError(f"layer {layer!r} has {acts.shape[1]} units but {s.t64.size} thresholds")
            if s.axes is None:
                s.axes = (
                    bilinear_axis(acts.shape[2], probe.mask_size[0], device),
                    bilinear_axis(acts.shape[3], probe.mask_size[1], device),
                )
            masks[layer] = _batch_masks(acts, s.t64_tensor, s.t32, s.axes)
        image_labels = next(labels_of_batches, None)
        if image_labels is None:
            break
        for item in image_labels:
            truth[item.numbers] += item.truth
        batch_labels = _batch_labels(image_labels, categories, device)
        for layer, layer_masks in masks.items():
            s = sums[layer]
            _count_batch(layer_masks, batch_labels, semantics, s.intersect, s.activation)
        done += len(rows)
        if progress:
            progress(done, len(indices))


@dataclass(frozen=True)
class _BatchLabels:
    """A batch's `ImageLabels`, padded to tensors: label numbers (B x L, 0 = padding), label sets
    (B x S x L), each pixel's set (B x P), each label's category one-hot (B x L x C)."""

    numbers: torch.Tensor
    combos: torch.Tensor
    pixel_combo: torch.Tensor
    label_cats: torch.Tensor


def _batch_labels(items: list[ImageLabels], categories: torch.Tensor, device: torch.device) -> _BatchLabels:
    labels = max(1, max(item.numbers.size for item in items))
    sets = max(item.combos.shape[0] for item in items)
    numbers = torch.zeros((len(items), labels), dtype=torch.int64)
    combos = torch.zeros((len(items), sets, labels), dtype=torch.float32)
    for b, item in enumerate(items):
        numbers[b, : item.numbers.size] = torch.from_numpy(item.numbers)
        combos[b, : item.combos.shape[0], : item.combos.shape[1]] = item.combos
    pixel_combo = torch.stack([item.pixel_combo for item in items])
    numbers = numbers.to(device)
    return _BatchLabels(numbers, combos.to(device), pixel_combo.to(device), categories[numbers])


def _batch_masks(
    acts: torch.Tensor,
    t64: torch.Tensor,
    t32: torch.Tensor,
    axes: tuple[BilinearAxis, BilinearAxis],
) -> _Masks | None:
    """(pair image, pair channel, entry pair, entry pixel) of a batch's mask pixels (needs no labels), or
    None."""
    pair_b, pair_channel = torch.nonzero(acts.amax(dim=(2, 3)) > t32, as_tuple=True)
    if pair_b.numel() == 0:
        return None
    maps = acts[pair_b, pair_channel]
    entry_p, entry_pixel = mask_pixels(maps, t64[pair_channel], t32[pair_channel], *axes)
    return pair_b, pair_channel, entry_p, entry_pixel


def _count_batch(
    masks: _Masks | None,
    labels: _BatchLabels,
    semantics: str,
    intersect: torch.Tensor,
    activation: torch.Tensor,
) -> None:
    if masks is None:
        return
    pair_b, pair_channel, entry_p, entry_pixel = masks
    sets = labels.combos.shape[1]
    combo = labels.pixel_combo[pair_b[entry_p], entry_pixel]
    per_set = torch.bincount(entry_p * sets + combo, minlength=pair_b.numel() * sets)
    per_set = per_set.view(-1, 1, sets).to(torch.float32)
    size = per_set.sum((1, 2)).round().to(torch.int64)
    inter = torch.bmm(per_set, labels.combos[pair_b]).squeeze(1).round_().to(torch.int64)
    numbers = labels.numbers[pair_b]
    intersect.index_put_((pair_channel[:, None].expand_as(numbers), numbers), inter, accumulate=True)
    if semantics == "paper":
        present = (labels.label_cats.sum(1) > 0).to(torch.int64)[pair_b]
    else:
        hit = torch.bmm((inter > 0).to(torch.float32).unsqueeze(1), labels.label_cats[pair_b]).squeeze(1)
        present = (hit > 0).to(torch.int64)
    activation.index_add_(0, pair_channel, size[:, None] * present)
