"""Per-layer states of the two passes, so that shards of a probe set can be dissected anywhere and merged.

A `ScanState` holds threshold candidates and top images, a `TallyState` the integer sums I, G and A; both
merge exactly (the union of disjoint image sets) and save to / load from .npz without pickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dissection.errors import DissectionError
from dissection.quantile import candidates_needed, check_semantics, quantile_from_top

_NO_IMAGE = np.iinfo(np.int64).max


def rank_images(values: np.ndarray, images: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the `topk` (value, image) pairs by value descending, ties to the lower image index."""
    key = np.where(images < 0, _NO_IMAGE, images)
    order = np.lexsort((key, -values.astype(np.float64)), axis=-1)[:, :topk]
    return np.take_along_axis(values, order, 1), np.take_along_axis(images, order, 1)


def _save_npz(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    partial = path.with_name(path.name + ".partial.npz")
    contents: dict[str, Any] = {"meta": np.array(json.dumps(meta)), **arrays}
    np.savez(partial, **contents)
    partial.replace(path)


def _load_npz(path: Path, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
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
    candidates: np.ndarray  # channels x c float32, each row descending
    top_values: np.ndarray  # channels x topk float32, -inf = no image
    top_images: np.ndarray  # channels x topk int64, -1 = no image

    @property
    def num_units(self) -> int:
        return int(self.candidates.shape[0])

    @property
    def total_positions(self) -> int:
        return self.total_images * self.map_shape[0] * self.map_shape[1]

    def merge(self, other: ScanState) -> ScanState:
        """The state of the union of both image sets (they must be disjoint)."""
        if (self.layer, self.total_images, self.map_shape, self.num_units) != (
            other.layer,
            other.total_images,
            other.map_shape,
            other.num_units,
        ):
            raise DissectionError(f"layer {self.layer!r}: cannot merge scan states of different runs")
        images = _disjoint(self.images, other.images, self.layer)
        keep = candidates_needed(self.total_positions)
        joined = np.concatenate([self.candidates, other.candidates], 1)
        first = joined.shape[1] - min(keep, joined.shape[1])
        candidates = -np.sort(-np.partition(joined, first, 1)[:, first:], 1)
        topk = self.top_values.shape[1]
        values, tops = rank_images(
            np.concatenate([self.top_values, other.top_values], 1),
            np.concatenate([self.top_images, other.top_images], 1),
            topk,
        )
        return ScanState(self.layer, self.total_images, self.map_shape, images, candidates, values, tops)

    def thresholds(self, semantics: str = "paper") -> np.ndarray:
        """T_k per unit (float64); the state must cover every image of the probe set."""
        check_semantics(semantics)
        if self.images.size != self.total_images:
            raise DissectionError(
                f"layer {self.layer!r}: thresholds need all {self.total_images} images; "
                f"the merged scan covers {self.images.size}"
            )
        return quantile_from_top(self.candidates, self.total_positions, semantics)

    def save(self, path: Path) -> None:
        meta = {
            "kind": "scan",
            "layer": self.layer,
            "total_images": self.total_images,
            "map_shape": list(self.map_shape),
        }
        _save_npz(
            path,
            meta,
            {
                "images": self.images,
                "candidates": self.candidates,
                "top_values": self.top_values,
                "top_images": self.top_images,
            },
        )

    @classmethod
    def load(cls, path: Path) -> ScanState:
        meta, a = _load_npz(path, "scan")
        height, width = meta["map_shape"]
        return cls(
            meta["layer"],
            meta["total_images"],
            (height, width),
            a["images"],
            a["candidates"],
            a["top_values"],
            a["top_images"],
        )


@dataclass
class TallyState:
    """Integer sums I[k,c], G[c], A[k,cat] of one layer over a set of images; merges by addition."""

    layer: str
    semantics: str
    thresholds: np.ndarray  # float64 per channel
    images: np.ndarray
    intersect: np.ndarray  # channels x labels int64
    truth: np.ndarray  # labels int64
    activation: np.ndarray  # channels x categories int64

    def merge(self, other: TallyState) -> TallyState:
        """The sums over the union of both (disjoint) image sets."""
        if (self.layer, self.semantics, self.intersect.shape, self.activation.shape) != (
            other.layer,
            other.semantics,
            other.intersect.shape,
            other.activation.shape,
        ) or not np.array_equal(self.thresholds, other.thresholds):
            raise DissectionError(
                f"layer {self.layer!r}: cannot merge tallies of different runs or thresholds"
            )
        return TallyState(
            self.layer,
            self.semantics,
            self.thresholds,
            _disjoint(self.images, other.images, self.layer),
            self.intersect + other.intersect,
            self.truth + other.truth,
            self.activation + other.activation,
        )

    def save(self, path: Path) -> None:
        meta = {"kind": "tally", "layer": self.layer, "semantics": self.semantics}
        _save_npz(
            path,
            meta,
            {
                "thresholds": self.thresholds,
                "images": self.images,
                "intersect": self.intersect,
                "truth": self.truth,
                "activation": self.activation,
            },
        )

    @classmethod
    def load(cls, path: Path) -> TallyState:
        meta, a = _load_npz(path, "tally")
        return cls(
            meta["layer"],
            meta["semantics"],
            a["thresholds"],
            a["images"],
            a["intersect"],
            a["truth"],
            a["activation"],
        )
