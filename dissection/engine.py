"""Network Dissection (Bau, Zhou et al., CVPR 2017): exact, streaming, mergeable over shards of a probe set.

Pipeline, each step usable on its own so that workers can map-reduce shards over machines:

1. `scan(source, probe, indices)` — ONE forward pass over any subset of image indices. Per layer it returns a
   `ScanState`: the exact threshold candidates (each unit's top `candidates_needed(n)` raw activations, n = all
   positions of the whole probe set) and each unit's top-k images by max activation. With `cache_dir` it also
   writes the layer's float32 activations there (an .npy per layer) so the tally needs no second forward.
2. `ScanState.merge` (exact, associative) over shards, then `ScanState.thresholds(semantics)`.
3. `tally(source, probe, thresholds, indices)` — per layer a `TallyState` of integer sums I[k,c], G[c],
   A[k,cat]; `TallyState.merge` adds them exactly. (Image, unit) pairs whose map never exceeds T_k are
   skipped, and only the bilinear cells with a corner above T_k are upsampled (float64, from the definition).
4. `finalize(probe, scan_state, tally_state)` → `LayerResult`; `write_layer(result, probe, OUT/<layer>, maps)`
   writes the folder, `maps` giving activation maps for tiles (`ArrayActivations.maps`, `cached_activations`,
   or `model_maps` when no cache is at hand).
`dissect(...)` runs all of it in one call (the CLI's `run`). States save to / load from .npz (no pickles).

Map-reduce over workers, e.g.:
    source = ModelActivations(model, [layer]); probe = load_probe_set(root)
    scans = [scan(source, probe, shard)[layer] for shard in shards]             # anywhere; .save() / .load()
    thresholds = functools.reduce(ScanState.merge, scans).thresholds("paper")
    tallies = [tally(source, probe, {layer: thresholds}, shard)[layer] for shard in shards]
    result = finalize(probe, functools.reduce(ScanState.merge, scans), functools.reduce(TallyState.merge, tallies))
    write_layer(result, probe, out / layer, model_maps(source, probe, layer))

Semantics (`paper`, default): T_k = 0.995 quantile (NumPy linear) of unit k's activations over every position
of every image; M_k = bilinear upsampling (align_corners=False) of the map to sh x sw, > T_k;
I[k,c] = Σ|M_k ∩ L_c|, G[c] = Σ|L_c|, A[k,cat] = Σ|M_k| over images where a label of primary category cat
appears; IoU = I / (A[k,cat(c)] + G[c] - I). `netdissect-lite`: T_k = quantile 994/999 (hazen), and A adds
|M_k| only for images where a label of category cat has a pixel under M_k (or is image-level).

OUT/<layer>/result.json (schema 1):
    {"schema": 1, "layer": str, "semantics": "paper"|"netdissect-lite", "probe_set": str (absolute path),
     "num_images": int, "num_units": int, "topk": int, "iou_threshold": float, "categories": [str, ...],
     "summary": {"interpretable": int, "unique_concepts": int,
                 "per_category": {category: interpretable units}, "per_concept": {label: interpretable units}},
     "units": [{"unit": int (1-based, as tally.csv), "channel": int (0-based channel of the layer output),
                "threshold": float, "label": str, "category": str, "iou": float, "interpretable": bool,
                "concepts": [{"label": str, "category": str, "iou": float}] (top 5 by IoU),
                "strip": str (path relative to the layer folder),
                "images": [{"image": str (path relative to the probe set's images/ folder, as in index.csv),
                            "index": int (0-based row of index.csv), "activation": float (max over the map),
                            "tile": str (path relative to the layer folder)}] (ranked, at most topk)}]}
    `units` is in channel order. tally.csv holds NetDissect-Lite's columns, rows sorted by score.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dissection.broden import ProbeSet, load_probe_set
from dissection.data import _label_stream, default_workers, image_batches
from dissection.errors import DissectionError, LayerError, ModelError
from dissection.hooks import capture_outputs, resolve_layer
from dissection.models import IMAGENET_MEAN, IMAGENET_STD

Progress = Callable[[int, int], None]
SEMANTICS = ("paper", "netdissect-lite")
_QUANTILE = {"paper": (0.995, "linear"), "netdissect-lite": (994 / 999, "hazen")}
_NO_IMAGE = np.iinfo(np.int64).max
SCHEMA = 1


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DissectionError("--device cuda: no CUDA device is available")
    return torch.device(device)


def _check_semantics(semantics: str) -> None:
    if semantics not in SEMANTICS:
        raise DissectionError(f"unknown semantics {semantics!r}; use one of {', '.join(SEMANTICS)}")


def _virtual_index(n: int, q: float, method: str) -> float:
    """NumPy's 0-based virtual index of quantile q among n sorted values."""
    if method == "linear":
        return (n - 1) * q
    return n * q + (0.5 + q * (1 - 0.5 - 0.5)) - 1  # hazen: alpha = beta = 1/2


def candidates_needed(n: int) -> int:
    """How many of a unit's largest values determine its quantile in both semantics (n values in all)."""
    lowest = min(math.floor(max(0.0, _virtual_index(n, q, method))) for q, method in _QUANTILE.values())
    return min(n, n - lowest + 1)


def quantile_from_top(top: np.ndarray, n: int, semantics: str) -> np.ndarray:
    """Each row's quantile as `np.quantile` computes it over n values, given the row's top values (descending)."""
    q, method = _QUANTILE[semantics]
    vi = _virtual_index(n, q, method)
    if vi >= n - 1:
        previous = following = n - 1
    elif vi < 0:
        previous = following = 0
    else:
        previous = math.floor(vi)
        following = previous + 1
    gamma = vi - math.floor(vi)
    a = top[:, n - 1 - previous].astype(np.float64)
    b = top[:, n - 1 - following].astype(np.float64)
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def float32_below(thresholds: np.ndarray) -> np.ndarray:
    """The largest float32 ≤ each threshold, so that `x > t32` equals `x > t` for every float32 x."""
    t32 = thresholds.astype(np.float32)
    above = t32.astype(np.float64) > thresholds
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _rank_images(values: np.ndarray, images: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the `topk` (value, image) pairs by value descending, ties to the lower image index."""
    key = np.where(images < 0, _NO_IMAGE, images)
    order = np.lexsort((key, -values.astype(np.float64)), axis=-1)[:, :topk]
    return np.take_along_axis(values, order, 1), np.take_along_axis(images, order, 1)


def _save_npz(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, meta=np.array(json.dumps(meta)), **arrays)
    partial.replace(path)


def _load_npz(path: Path, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {key: data[key] for key in data.files if key != "meta"}
    except (OSError, KeyError, ValueError) as error:
        raise DissectionError(f"{path}: not a saved {kind} ({error})") from None
    if meta.get("kind") != kind:
        raise DissectionError(f"{path}: holds a {meta.get('kind')!r}, not a {kind}")
    return meta, arrays


def _disjoint(a: np.ndarray, b: np.ndarray, layer: str) -> np.ndarray:
    images = np.concatenate([a, b])
    merged = np.unique(images)
    if merged.size != images.size:
        raise DissectionError(f"layer {layer!r}: cannot merge shards that share images")
    return merged


@dataclass
class ScanState:
    """Threshold candidates and top images of one layer over a set of images; merges exactly with others."""

    layer: str
    total_images: int
    map_shape: tuple[int, int]
    images: np.ndarray  # sorted image indices covered
    candidates: np.ndarray  # units x c float32, each row descending
    top_values: np.ndarray  # units x topk float32, -inf = no image
    top_images: np.ndarray  # units x topk int64, -1 = no image

    @property
    def units(self) -> int:
        return self.candidates.shape[0]

    @property
    def total_positions(self) -> int:
        return self.total_images * self.map_shape[0] * self.map_shape[1]

    def merge(self, other: ScanState) -> ScanState:
        """The state of the union of both image sets (they must be disjoint)."""
        if (self.layer, self.total_images, self.map_shape, self.units) != (
            other.layer, other.total_images, other.map_shape, other.units
        ):
            raise DissectionError(f"layer {self.layer!r}: cannot merge scan states of different runs")
        images = _disjoint(self.images, other.images, self.layer)
        keep = candidates_needed(self.total_positions)
        joined = np.concatenate([self.candidates, other.candidates], 1)
        count = min(keep, joined.shape[1])
        candidates = -np.sort(-np.partition(joined, joined.shape[1] - count, 1)[:, joined.shape[1] - count :], 1)
        topk = self.top_values.shape[1]
        values, tops = _rank_images(
            np.concatenate([self.top_values, other.top_values], 1),
            np.concatenate([self.top_images, other.top_images], 1), topk,
        )
        return ScanState(self.layer, self.total_images, self.map_shape, images, candidates, values, tops)

    def thresholds(self, semantics: str = "paper") -> np.ndarray:
        """T_k per unit (float64); the state must cover every image of the probe set."""
        _check_semantics(semantics)
        if self.images.size != self.total_images:
            raise DissectionError(
                f"layer {self.layer!r}: thresholds need all {self.total_images} images; "
                f"the merged scan covers {self.images.size}"
            )
        return quantile_from_top(self.candidates, self.total_positions, semantics)

    def save(self, path: Path) -> None:
        meta = {"kind": "scan", "layer": self.layer, "total_images": self.total_images,
                "map_shape": list(self.map_shape)}
        _save_npz(path, meta, {"images": self.images, "candidates": self.candidates,
                               "top_values": self.top_values, "top_images": self.top_images})

    @classmethod
    def load(cls, path: Path) -> ScanState:
        meta, a = _load_npz(path, "scan")
        return cls(meta["layer"], meta["total_images"], tuple(meta["map_shape"]), a["images"], a["candidates"],
                   a["top_values"], a["top_images"])


@dataclass
class TallyState:
    """Integer sums I[k,c], G[c], A[k,cat] of one layer over a set of images; merges by addition."""

    layer: str
    semantics: str
    thresholds: np.ndarray  # float64 per unit
    images: np.ndarray
    intersect: np.ndarray  # units x labels int64
    truth: np.ndarray  # labels int64
    activation: np.ndarray  # units x categories int64

    def merge(self, other: TallyState) -> TallyState:
        """The sums over the union of both (disjoint) image sets."""
        if (self.layer, self.semantics, self.intersect.shape, self.activation.shape) != (
            other.layer, other.semantics, other.intersect.shape, other.activation.shape
        ) or not np.array_equal(self.thresholds, other.thresholds):
            raise DissectionError(f"layer {self.layer!r}: cannot merge tallies of different runs or thresholds")
        return TallyState(
            self.layer, self.semantics, self.thresholds, _disjoint(self.images, other.images, self.layer),
            self.intersect + other.intersect, self.truth + other.truth, self.activation + other.activation,
        )

    def save(self, path: Path) -> None:
        meta = {"kind": "tally", "layer": self.layer, "semantics": self.semantics}
        _save_npz(path, meta, {"thresholds": self.thresholds, "images": self.images, "intersect": self.intersect,
                               "truth": self.truth, "activation": self.activation})

    @classmethod
    def load(cls, path: Path) -> TallyState:
        meta, a = _load_npz(path, "tally")
        return cls(meta["layer"], meta["semantics"], a["thresholds"], a["images"], a["intersect"], a["truth"],
                   a["activation"])


class ModelActivations:
    """Activations of named layers of a model, one forward per batch, images normalized by mean/std."""

    def __init__(
        self, model: nn.Module, layers: Sequence[str], *, device: str = "auto",
        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, workers: int | None = None,
    ) -> None:
        if not layers:
            raise LayerError("name at least one layer to dissect")
        for layer in layers:
            resolve_layer(model, layer)
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.layers = tuple(layers)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.workers = workers

    def batches(
        self, probe: ProbeSet, indices: Sequence[int], *, batch_size: int
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        with torch.no_grad(), capture_outputs(self.model, self.layers) as captured:
            for rows, pixels in image_batches(probe, indices, batch_size=batch_size, workers=self.workers):
                self.model((pixels.to(self.device) - self.mean) / self.std)
                yield rows, {layer: captured[layer].float() for layer in self.layers}


class ArrayActivations:
    """Precomputed activations: an .npy of images x units x h x w, rows in index.csv order.

    Rows are read with plain file reads, not a memory map, so that a file larger than RAM never inflates the
    process's resident memory. `rows[i]` is the file row of image index i (default: i).
    """

    def __init__(self, path: str | Path, layer: str, probe: ProbeSet, *, device: str = "auto",
                 rows: np.ndarray | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"activations file {self.path} does not exist")
        try:
            with self.path.open("rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else (
                    np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(handle)
                self.offset = handle.tell()
        except (OSError, ValueError) as error:
            raise ModelError(f"{self.path}: not a readable .npy file ({error})") from None
        if len(shape) != 4 or fortran or dtype.hasobject:
            raise LayerError(f"{self.path}: activations have shape {shape}; need a C-order images x units x h x w")
        if rows is None and shape[0] != len(probe):
            raise ModelError(
                f"{self.path}: holds {shape[0]} rows of activations but {probe.root / 'index.csv'} "
                f"lists {len(probe)} images"
            )
        self.shape, self.dtype = tuple(shape), dtype
        self.rows = np.arange(len(probe)) if rows is None else rows
        self.layers = (layer,)
        self.device = resolve_device(device)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        file_rows = self.rows[indices]
        if (file_rows < 0).any():
            raise DissectionError(f"{self.path}: holds no activations for image {int(indices[file_rows < 0][0])}")
        row_values = int(np.prod(self.shape[1:]))
        out = np.empty((len(file_rows), *self.shape[1:]), np.float32)
        with self.path.open("rb") as handle:
            i = 0
            while i < len(file_rows):
                j = i + 1
                while j < len(file_rows) and file_rows[j] == file_rows[j - 1] + 1:
                    j += 1
                handle.seek(self.offset + int(file_rows[i]) * row_values * self.dtype.itemsize)
                values = np.fromfile(handle, self.dtype, (j - i) * row_values)
                if values.size != (j - i) * row_values:
                    raise ModelError(f"{self.path}: file is truncated at row {int(file_rows[i])}")
                out[i:j] = values.reshape(j - i, *self.shape[1:])
                i = j
        return out

    def batches(
        self, probe: ProbeSet, indices: Sequence[int], *, batch_size: int
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        indices = np.asarray(indices, np.int64)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            yield chunk, {self.layers[0]: torch.from_numpy(self._read(chunk)).to(self.device)}

    def maps(self, indices: np.ndarray) -> np.ndarray:
        """Activation maps (float32) of the given image indices, for tiles."""
        return self._read(np.asarray(indices, np.int64))


class _CacheWriter:
    """Appends float32 rows to an .npy file through ordinary writes (no memory map, so no resident growth)."""

    def __init__(self, path: Path, rows: int, row_shape: tuple[int, ...]) -> None:
        self.handle = path.open("wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": (rows, *row_shape)}
        np.lib.format.write_array_header_1_0(self.handle, header)

    def write(self, acts: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(acts, np.float32).tobytes())

    def close(self) -> None:
        self.handle.close()


ActivationSource = ModelActivations | ArrayActivations


@dataclass
class _ScanAccumulator:
    layer: str
    total_images: int
    topk: int
    device: torch.device
    map_shape: tuple[int, int] | None = None
    keep: int = 0
    candidates: torch.Tensor | None = None
    pending: list[torch.Tensor] = field(default_factory=list)
    pending_count: int = 0
    top_values: np.ndarray | None = None
    top_images: np.ndarray | None = None
    images: list[np.ndarray] = field(default_factory=list)

    def add(self, rows: np.ndarray, acts: torch.Tensor) -> None:
        n, units, h, w = acts.shape
        if self.map_shape is None:
            self.map_shape = (h, w)
            self.keep = candidates_needed(self.total_images * h * w)
            self.candidates = acts.new_empty((units, 0))
            self.top_values = np.full((units, self.topk), -np.inf, np.float32)
            self.top_images = np.full((units, self.topk), -1, np.int64)
        self.pending.append(acts.transpose(0, 1).reshape(units, -1))
        self.pending_count += n * h * w
        if self.pending_count >= self.keep:
            self._compact()
        maxes = acts.amax(dim=(2, 3)).T.cpu().numpy()
        self.top_values, self.top_images = _rank_images(
            np.concatenate([self.top_values, maxes], 1),
            np.concatenate([self.top_images, np.broadcast_to(rows, maxes.shape)], 1), self.topk,
        )
        self.images.append(rows)

    def _compact(self) -> None:
        joined = torch.cat([self.candidates, *self.pending], 1)
        self.candidates = joined.topk(min(self.keep, joined.shape[1]), dim=1, sorted=False).values
        self.pending, self.pending_count = [], 0

    def state(self) -> ScanState:
        if self.map_shape is None:
            raise DissectionError(f"layer {self.layer!r}: a scan needs at least one image")
        self._compact()
        candidates = self.candidates.sort(dim=1, descending=True).values.cpu().numpy()
        images = np.sort(np.concatenate(self.images))
        return ScanState(self.layer, self.total_images, self.map_shape, images, candidates, self.top_values,
                         self.top_images)


def scan(
    source: ActivationSource, probe: ProbeSet, indices: Sequence[int] | None = None, *, topk: int = 20,
    batch_size: int = 32, cache_dir: Path | None = None, progress: Progress | None = None,
) -> dict[str, ScanState]:
    """One forward pass over `indices` (default: all images) → a `ScanState` per layer.

    With `cache_dir`, each layer's activations are written to `<cache_dir>/<layer>.npy` (rows in `indices`
    order, plus `indices.npy`) for `cached_activations`.
    """
    indices = np.arange(len(probe)) if indices is None else np.asarray(indices, np.int64)
    device = getattr(source, "device", torch.device("cpu"))
    accumulators = {layer: _ScanAccumulator(layer, len(probe), topk, device) for layer in source.layers}
    caches: dict[str, _CacheWriter] = {}
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
                        caches[layer] = _CacheWriter(Path(cache_dir) / f"{layer}.npy", len(indices), acts.shape[1:])
                    caches[layer].write(acts.cpu().numpy())
            done += len(rows)
            if progress:
                progress(done, len(indices))
    finally:
        for cache in caches.values():
            cache.close()
    return {layer: accumulator.state() for layer, accumulator in accumulators.items()}


def model_maps(source: ModelActivations, probe: ProbeSet, layer: str, *,
               batch_size: int = 32) -> Callable[[np.ndarray], np.ndarray]:
    """A `maps(indices)` function for `write_layer` that runs the model on just those images."""

    def maps(indices: np.ndarray) -> np.ndarray:
        parts = [outputs[layer].cpu().numpy() for _, outputs in source.batches(probe, indices, batch_size=batch_size)]
        return np.concatenate(parts)

    return maps


def cached_activations(cache_dir: Path, layer: str, probe: ProbeSet, *, device: str = "auto") -> ArrayActivations:
    """The activations `scan(..., cache_dir=)` wrote for `layer`, as a source for `tally` and tiles."""
    cache_dir = Path(cache_dir)
    indices = np.load(cache_dir / "indices.npy")
    rows = np.full(len(probe), -1, np.int64)
    rows[indices] = np.arange(len(indices))
    return ArrayActivations(cache_dir / f"{layer}.npy", layer, probe, device=device, rows=rows)


def _category_onehot(probe: ProbeSet, device: torch.device) -> torch.Tensor:
    onehot = torch.zeros((probe.num_labels, len(probe.categories)), dtype=torch.float32)
    known = np.nonzero(probe.label_category >= 0)[0]
    onehot[known, probe.label_category[known]] = 1.0
    return onehot.to(device)


def tally(
    source: ActivationSource, probe: ProbeSet, thresholds: Mapping[str, np.ndarray],
    indices: Sequence[int] | None = None, *, semantics: str = "paper", batch_size: int = 32,
    workers: int | None = None, progress: Progress | None = None,
) -> dict[str, TallyState]:
    """Sum I, G and A over `indices` (default: all images) for every layer of `source`, given T_k per layer."""
    _check_semantics(semantics)
    indices = np.arange(len(probe)) if indices is None else np.asarray(indices, np.int64)
    device = getattr(source, "device", torch.device("cpu"))
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
        sums[layer] = {
            "t64": t64, "t64_tensor": torch.from_numpy(t64).to(device),
            "t32": torch.from_numpy(float32_below(t64)).to(device),
            "intersect": torch.zeros((t64.size, labels), dtype=torch.int64, device=device),
            "activation": torch.zeros((t64.size, cats), dtype=torch.int64, device=device),
        }
    truth = np.zeros(labels, np.int64)
    threads = torch.get_num_threads()
    # The label workers decode while the tally counts: leave them their cores (spinning intra-op threads on an
    # oversubscribed CPU slow both down).
    label_workers = default_workers() if workers is None else workers
    if device.type == "cpu" and label_workers > 0:
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - label_workers)))
    try:
        _tally_all(source, probe, indices, batch_size, workers, categories, sums, truth, semantics, progress)
    finally:
        torch.set_num_threads(threads)
    images = np.sort(indices)
    return {
        layer: TallyState(layer, semantics, s["t64"], images, s["intersect"].cpu().numpy(), truth.copy(),
                          s["activation"].cpu().numpy())
        for layer, s in sums.items()
    }


def _tally_all(
    source: ActivationSource, probe: ProbeSet, indices: np.ndarray, batch_size: int, workers: int | None,
    categories: torch.Tensor, sums: dict, truth: np.ndarray, semantics: str, progress: Progress | None,
) -> None:
    device = getattr(source, "device", torch.device("cpu"))
    done = 0
    # The label workers start now; each batch's mask pixels are found before its labels are waited for.
    label_stream = _label_stream(probe, indices, batch_size=batch_size, workers=workers)
    for rows, outputs in source.batches(probe, indices, batch_size=batch_size):
        masks = {}
        for layer, acts in outputs.items():
            s = sums[layer]
            if acts.shape[1] != s["t64"].size:
                raise LayerError(f"layer {layer!r} has {acts.shape[1]} units but {s['t64'].size} thresholds")
            if "axes" not in s:
                s["axes"] = (_axis(acts.shape[2], probe.mask_size[0], device),
                             _axis(acts.shape[3], probe.mask_size[1], device))
            masks[layer] = _batch_masks(acts, s["t64_tensor"], s["t32"], s["axes"])
        image_labels = next(label_stream, None)
        if image_labels is None:
            break
        for item in image_labels:
            truth[item.numbers] += item.truth
        batch_labels = _batch_labels(image_labels, categories, device)
        for layer, layer_masks in masks.items():
            s = sums[layer]
            _count_batch(layer_masks, batch_labels, semantics, s["intersect"], s["activation"])
        done += len(rows)
        if progress:
            progress(done, len(indices))


@dataclass(frozen=True)
class _Axis:
    """Bilinear resampling (align_corners=False, as F.interpolate) along one axis, by cell: output coordinate
    o reads sources lo(o) and min(lo(o) + 1, n - 1). The outputs with lo = r are split into pieces of at most
    `ceil(size_out / size_in)`; `pieces[r]` lists cell r's pieces (-1 = padding), `cells[q]` piece q's outputs
    (-1 = padding) and `weights[q]` their float64 weights on the two sources (NaN for padding)."""

    size_out: int
    cells: torch.Tensor  # pieces x L int64
    weights: torch.Tensor  # pieces x L x 2 float64
    pieces: torch.Tensor  # size_in x K int64


def _axis(size_in: int, size_out: int, device: torch.device | str) -> _Axis:
    src = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    w_hi = src - lo
    width = max(1, -(-size_out // size_in))
    chunks: list[list[np.ndarray]] = []
    for r in range(size_in):
        outs = np.nonzero(lo == r)[0]
        chunks.append([outs[i : i + width] for i in range(0, len(outs), width)])
    count = sum(len(c) for c in chunks)
    cells = np.full((max(1, count), width), -1, np.int64)
    weights = np.full((max(1, count), width, 2), np.nan)  # padding: NaN values, never above T
    pieces = np.full((size_in, max(1, max(len(c) for c in chunks))), -1, np.int64)
    q = 0
    for r, parts in enumerate(chunks):
        for j, outs in enumerate(parts):
            pieces[r, j] = q
            cells[q, : len(outs)] = outs
            weights[q, : len(outs), 0] = 1.0 - w_hi[outs]
            weights[q, : len(outs), 1] = w_hi[outs]
            q += 1
    return _Axis(size_out, torch.from_numpy(cells).to(device), torch.from_numpy(weights).to(device),
                 torch.from_numpy(pieces).to(device))


def _mask_pixels(
    maps: torch.Tensor, t64: torch.Tensor, t32: torch.Tensor, ay: _Axis, ax: _Axis
) -> tuple[torch.Tensor, torch.Tensor]:
    """(map index, pixel index) of every mask pixel (upsampled value > T) of maps (n x h x w) with
    thresholds t64 (float64) / t32 (the largest float32 ≤ t64), in map order, each pixel once.

    A bilinear value is a convex combination of the four corners of its cell, so only cells with a corner
    above T can hold mask pixels; those cells are upsampled in float64 from their 2 x 2 corners, piece by
    piece (each output of a cell belongs to exactly one row piece and one column piece).
    """
    n, h, w = maps.shape
    hot = F.pad(maps > t32[:, None, None], (0, 1, 0, 1))
    cell_hot = hot[:, :-1, :-1] | hot[:, 1:, :-1] | hot[:, :-1, 1:] | hot[:, 1:, 1:]
    cell_p, cell_r, cell_c = torch.nonzero(cell_hot, as_tuple=True)
    piece_r, piece_c = ay.pieces[cell_r], ax.pieces[cell_c]
    if piece_r.shape[1] == 1 and piece_c.shape[1] == 1 and bool((piece_r >= 0).all()) and bool((piece_c >= 0).all()):
        piece_r, piece_c = piece_r[:, 0], piece_c[:, 0]
    else:
        both = (piece_r >= 0)[:, :, None] & (piece_c >= 0)[:, None, :]
        which, i, j = torch.nonzero(both, as_tuple=True)
        piece_r, piece_c = piece_r[which, i], piece_c[which, j]
        cell_p, cell_r, cell_c = cell_p[which], cell_r[which], cell_c[which]
    rows2 = torch.stack([cell_r, (cell_r + 1).clamp_(max=h - 1)], 1)
    cols2 = torch.stack([cell_c, (cell_c + 1).clamp_(max=w - 1)], 1)
    corners = maps[cell_p[:, None, None], rows2[:, :, None], cols2[:, None, :]].double()
    values = torch.bmm(torch.bmm(ay.weights[piece_r], corners), ax.weights[piece_c].transpose(1, 2))
    above = values > t64[cell_p][:, None, None]  # padded outputs are NaN
    cell, r, c = torch.nonzero(above, as_tuple=True)
    return cell_p[cell], ay.cells[piece_r[cell], r] * ax.size_out + ax.cells[piece_c[cell], c]


@dataclass(frozen=True)
class _BatchLabels:
    """A batch's `ImageLabels`, padded to tensors: label numbers (B x L, 0 = padding), label sets
    (B x S x L), each pixel's set (B x P), each label's category one-hot (B x L x C)."""

    numbers: torch.Tensor
    combos: torch.Tensor
    pixel_combo: torch.Tensor
    label_cats: torch.Tensor


def _batch_labels(items: list, categories: torch.Tensor, device: torch.device) -> _BatchLabels:
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
    acts: torch.Tensor, t64: torch.Tensor, t32: torch.Tensor, axes: tuple[_Axis, _Axis],
) -> tuple[torch.Tensor, ...] | None:
    """(pair image, pair unit, entry pair, entry pixel) of a batch's mask pixels (needs no labels), or None."""
    pair_b, pair_k = torch.nonzero(acts.amax(dim=(2, 3)) > t32, as_tuple=True)
    if pair_b.numel() == 0:
        return None
    entry_p, entry_pixel = _mask_pixels(acts[pair_b, pair_k], t64[pair_k], t32[pair_k], *axes)
    return pair_b, pair_k, entry_p, entry_pixel


def _count_batch(
    masks: tuple[torch.Tensor, ...] | None, labels: _BatchLabels, semantics: str, intersect: torch.Tensor,
    activation: torch.Tensor,
) -> None:
    if masks is None:
        return
    pair_b, pair_k, entry_p, entry_pixel = masks
    sets = labels.combos.shape[1]
    combo = labels.pixel_combo[pair_b[entry_p], entry_pixel]
    per_set = torch.bincount(entry_p * sets + combo, minlength=pair_b.numel() * sets)
    per_set = per_set.view(-1, 1, sets).to(torch.float32)
    size = per_set.sum((1, 2)).round().to(torch.int64)
    inter = torch.bmm(per_set, labels.combos[pair_b]).squeeze(1).round_().to(torch.int64)
    numbers = labels.numbers[pair_b]
    intersect.index_put_((pair_k[:, None].expand_as(numbers), numbers), inter, accumulate=True)
    if semantics == "paper":
        present = (labels.label_cats.sum(1) > 0).to(torch.int64)[pair_b]
    else:
        hit = torch.bmm((inter > 0).to(torch.float32).unsqueeze(1), labels.label_cats[pair_b]).squeeze(1)
        present = (hit > 0).to(torch.int64)
    activation.index_add_(0, pair_k, size[:, None] * present)


@dataclass(frozen=True)
class Concept:
    label: str
    category: str
    iou: float


@dataclass(frozen=True)
class UnitResult:
    channel: int
    threshold: float
    label: str
    category: str
    iou: float
    interpretable: bool
    concepts: tuple[Concept, ...]
    images: tuple[tuple[int, float], ...]  # (image index, max activation), ranked
    per_category: tuple[tuple[int, int, int, int, float], ...]  # per category: label number, G, A, I, IoU


@dataclass(frozen=True)
class LayerResult:
    layer: str
    semantics: str
    iou_threshold: float
    topk: int
    iou: np.ndarray  # units x labels
    units: tuple[UnitResult, ...]


def iou_matrix(probe: ProbeSet, state: TallyState) -> np.ndarray:
    """IoU[k,c] = I / (A[k, cat(c)] + G[c] - I), 0 where the denominator is 0 (unused label numbers: 0)."""
    cats = probe.label_category
    known = cats >= 0
    area = np.zeros_like(state.intersect)
    area[:, known] = state.activation[:, cats[known]]
    denominator = area + state.truth[None, :] - state.intersect
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denominator > 0, state.intersect / np.maximum(denominator, 1), 0.0)
    iou[:, ~known] = 0.0
    return iou


def finalize(
    probe: ProbeSet, scan_state: ScanState, tally_state: TallyState, *, iou_threshold: float = 0.04,
    top_concepts: int = 5,
) -> LayerResult:
    """Label every unit: per category the best label (ties: lowest number), then the best category (ties:
    the earlier one); interpretable when its IoU > `iou_threshold`."""
    if scan_state.layer != tally_state.layer:
        raise DissectionError(f"scan of {scan_state.layer!r} does not match tally of {tally_state.layer!r}")
    iou = iou_matrix(probe, tally_state)
    cats = probe.label_category
    members = [np.nonzero(cats == c)[0] for c in range(len(probe.categories))]
    units = []
    for k in range(iou.shape[0]):
        per_category = []
        best: tuple[float, int, int] | None = None
        for c, numbers in enumerate(members):
            if numbers.size == 0:
                per_category.append((0, 0, 0, 0, 0.0))
                continue
            number = int(numbers[np.argmax(iou[k, numbers])])
            value = float(iou[k, number])
            per_category.append((number, int(tally_state.truth[number]), int(tally_state.activation[k, c]),
                                 int(tally_state.intersect[k, number]), value))
            if best is None or value > best[0]:
                best = (value, number, c)
        assert best is not None
        order = np.lexsort((np.arange(iou.shape[1]), -iou[k]))
        concepts = tuple(
            Concept(probe.label_names[n], probe.categories[cats[n]], float(iou[k, n]))
            for n in order if cats[n] >= 0
        )[:top_concepts]
        images = tuple(
            (int(i), float(v)) for v, i in zip(scan_state.top_values[k], scan_state.top_images[k]) if i >= 0
        )
        units.append(UnitResult(
            k, float(tally_state.thresholds[k]), probe.label_names[best[1]], probe.categories[best[2]], best[0],
            best[0] > iou_threshold, concepts, images, tuple(per_category),
        ))
    return LayerResult(tally_state.layer, tally_state.semantics, iou_threshold, scan_state.top_values.shape[1],
                       iou, tuple(units))


def _unit_name(result: LayerResult, unit: int) -> str:
    return f"unit_{unit:0{max(4, len(str(len(result.units))))}d}"


def result_json(result: LayerResult, probe: ProbeSet) -> dict:
    """The result.json document (schema in the module docstring)."""
    interpretable = [u for u in result.units if u.interpretable]
    per_concept: dict[str, int] = {}
    for unit in interpretable:
        per_concept[unit.label] = per_concept.get(unit.label, 0) + 1
    units = []
    for unit in result.units:
        name = _unit_name(result, unit.channel + 1)
        units.append({
            "unit": unit.channel + 1, "channel": unit.channel, "threshold": unit.threshold, "label": unit.label,
            "category": unit.category, "iou": unit.iou, "interpretable": unit.interpretable,
            "concepts": [{"label": c.label, "category": c.category, "iou": c.iou} for c in unit.concepts],
            "strip": f"strips/{name}.jpg",
            "images": [
                {"image": probe.images[index].image, "index": index, "activation": value,
                 "tile": f"tiles/{name}/{rank:02d}.jpg"}
                for rank, (index, value) in enumerate(unit.images)
            ],
        })
    return {
        "schema": SCHEMA, "layer": result.layer, "semantics": result.semantics,
        "probe_set": str(probe.root.resolve()), "num_images": len(probe), "num_units": len(result.units),
        "topk": result.topk, "iou_threshold": result.iou_threshold, "categories": list(probe.categories),
        "summary": {
            "interpretable": len(interpretable), "unique_concepts": len(per_concept),
            "per_category": {cat: sum(u.category == cat for u in interpretable) for cat in probe.categories},
            "per_concept": dict(sorted(per_concept.items(), key=lambda item: (-item[1], item[0]))),
        },
        "units": units,
    }


def tally_rows(result: LayerResult, probe: ProbeSet) -> tuple[list[str], list[list[object]]]:
    """tally.csv in NetDissect-Lite's columns, rows sorted by score descending (ties: unit order)."""
    header = ["unit", "category", "label", "score"]
    for cat in probe.categories:
        header += [f"{cat}-label", f"{cat}-truth", f"{cat}-activation", f"{cat}-intersect", f"{cat}-iou"]
    rows = []
    for unit in sorted(result.units, key=lambda u: (-u.iou, u.channel)):
        row: list[object] = [unit.channel + 1, unit.category, unit.label, f"{unit.iou:.6f}"]
        for number, truth, area, inter, value in unit.per_category:
            row += [probe.label_names[number] if number else "", truth, area, inter, f"{value:.6f}"]
        rows.append(row)
    return header, rows


def write_layer(
    result: LayerResult, probe: ProbeSet, out_dir: Path, maps: Callable[[np.ndarray], np.ndarray], *,
    progress: Progress | None = None,
) -> Path:
    """Write tally.csv, result.json, tiles, strips and report.html to `out_dir` (= OUT/<layer>).

    Everything goes to a hidden sibling folder that replaces `out_dir` only when complete, so a failed run
    never leaves a folder that looks finished. `maps(indices)` returns those images' activation maps.
    """
    import csv

    from dissection.render import render_tiles, write_report

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        document = result_json(result, probe)
        header, rows = tally_rows(result, probe)
        with (partial / "tally.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        render_tiles(document, probe, partial, maps, progress=progress)
        (partial / "result.json").write_text(json.dumps(document, indent=1))
        write_report(partial)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def dissect(
    dataset: str | Path, out: str | Path, *, layers: Sequence[str], model: nn.Module | None = None,
    activations: str | Path | None = None, semantics: str = "paper", topk: int = 20, batch_size: int = 32,
    device: str = "auto", mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
    iou_threshold: float = 0.04, workers: int | None = None, progress: Progress | None = None,
) -> dict[str, Path]:
    """Dissect `layers` of `model` (or the precomputed `activations` .npy, one layer name = its folder) on the
    probe set `dataset`; writes OUT/<layer>/ per layer and returns those folders.

    One forward pass: activations are cached (float32) in a temporary folder under `out` while thresholds are
    collected, then tallied from the cache. `progress(done, total)` counts images of both passes and tiled units.
    """
    _check_semantics(semantics)
    if (model is None) == (activations is None):
        raise DissectionError("give either a model or precomputed activations")
    probe = load_probe_set(dataset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source: ActivationSource
    if model is not None:
        source = ModelActivations(model, layers, device=device, mean=mean, std=std, workers=workers)
    else:
        if len(layers) != 1:
            raise DissectionError("with precomputed activations, name exactly one --layer (the output folder)")
        source = ArrayActivations(activations, layers[0], probe, device=device)
    n = len(probe)
    progress_state = {"offset": 0, "total": n * (1 + len(source.layers))}

    def report(done: int, _total: int) -> None:
        if progress:
            progress(progress_state["offset"] + done, progress_state["total"])

    work = Path(tempfile.mkdtemp(prefix=".work-", dir=out))
    try:
        cache_dir = work / "cache" if model is not None else None
        scans = scan(source, probe, topk=topk, batch_size=batch_size, cache_dir=cache_dir, progress=report)
        progress_state["total"] += sum(state.units for state in scans.values())
        progress_state["offset"] = n
        thresholds = {layer: state.thresholds(semantics) for layer, state in scans.items()}
        written = {}
        for layer in source.layers:
            layer_source = cached_activations(cache_dir, layer, probe, device=device) if cache_dir else source
            tallies = tally(layer_source, probe, {layer: thresholds[layer]}, semantics=semantics,
                            batch_size=batch_size, workers=workers, progress=report)
            progress_state["offset"] += n
            result = finalize(probe, scans[layer], tallies[layer], iou_threshold=iou_threshold)
            written[layer] = write_layer(result, probe, out / layer, layer_source.maps, progress=report)
            progress_state["offset"] += scans[layer].units
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)
