"""Paint with units (GAN Dissection's interactive editor): regenerate a sample with some of a layer's units
removed or inserted inside brushed regions.

An edit names channels of the layer, "remove" or "add", and a brush mask at image resolution (any number of
strokes). The mask goes down to the layer's grid by area: a cell is edited when at least half of its pixels
are brushed. "remove" sets the channels to 0 in those cells; "add" sets each to its given value (a high
one: the paper's mean activation where the concept is present, or any stand-in the caller has). Edits apply
in order, each to the output of the one before, with `effects.insert`.

A `Painter` keeps each recent sample's latent, its layer output and its plain image. When the generator's
top-level children run in order (checked once on the first sample: the children after the layer, fed its
recorded output, must give the generator's own image), an edit reruns only those children; otherwise the
whole generator runs once with the layer's output replaced by a forward hook that removes itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal
from weakref import WeakKeyDictionary

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dissection.errors import DissectionError
from dissection.gan.effects import insert
from dissection.gan.models import Generator

Action = Literal["add", "remove"]
ACTIONS: tuple[Action, ...] = ("add", "remove")


@dataclass(frozen=True, eq=False)
class BrushEdit:
    """`channels` of the layer removed, or added at `values` (one per channel), where `mask` (H x W bool,
    the image's size) is brushed."""

    channels: tuple[int, ...]
    action: Action
    mask: np.ndarray
    values: tuple[float, ...] = ()


@dataclass
class _Sample:
    latent: torch.Tensor  # 1 x latent shape
    acts: torch.Tensor  # 1 x C x h x w, the layer's own output
    image: np.ndarray  # H x W x 3 uint8, unedited


def layer_cells(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """h x w bool: the cells of the layer's grid at least half brushed in `mask` (H x W bool)."""
    share = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None], size, mode="area"
    )
    return share[0, 0] >= 0.5


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """1 x 3 x H x W in [0, 1] → H x W x 3 uint8, rounded as the dissection's samples are stored."""
    return (pixels[0] * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    if not count:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_model_locks: WeakKeyDictionary[nn.Module, threading.Lock] = WeakKeyDictionary()
_locks_lock = threading.Lock()


def _lock_of(model: nn.Module) -> threading.Lock:
    with _locks_lock:
        return _model_locks.setdefault(model, threading.Lock())


class Painter:
    """One layer of one generator to paint on. Thread-safe: the painters of one model run one edit at a
    time, since a forward hook on a shared module would otherwise edit another thread's forward."""

    def __init__(
        self, generator: Generator, layer: str, *, keep: int = 64, threads: int | None = None
    ) -> None:
        """`keep`: how many samples' layer outputs to keep; `threads`: torch's intra-op threads while painting
        (process-wide, restored after; None leaves them)."""
        generator.check_layers([layer])
        self.generator, self.layer, self.keep, self.threads = generator, layer, keep, threads
        self._samples: OrderedDict[tuple[int, int], _Sample] = OrderedDict()
        self._tail: Generator | None = None
        self._tail_checked = False
        self._lock = _lock_of(generator.model)

    def paint(self, seed: int, index: int, edits: Sequence[BrushEdit] = ()) -> np.ndarray:
        """Sample `index` of `seed` (H x W x 3 uint8) with the edits applied in order; no edit gives the plain
        sample exactly."""
        with self._lock, _torch_threads(self.threads):
            sample = self._sample(seed, index)
            if not edits:
                return sample.image.copy()
            acts = sample.acts
            for number, edit in enumerate(edits, 1):
                acts = self._apply(acts, edit, sample.image.shape[:2], number)
            if self._tail is not None:
                pixels, _ = self._tail.run(acts)
            else:
                edited = acts
                pixels, _ = self.generator.run(sample.latent, edits={self.layer: lambda _own: edited.clone()})
            return to_uint8(pixels)

    def image_size(self, seed: int = 0) -> tuple[int, int]:
        with self._lock, _torch_threads(self.threads):
            height, width = self._sample(seed, 0).image.shape[:2]
        return int(height), int(width)

    def _sample(self, seed: int, index: int) -> _Sample:
        key = (int(seed), int(index))
        sample = self._samples.get(key)
        if sample is None:
            latent = self.generator.latents(seed, [index])
            pixels, recorded = self.generator.run(latent, record=[self.layer])
            acts = recorded[self.layer]
            if acts.dim() != 4:
                raise DissectionError(
                    f"generator {self.generator.where}: layer {self.layer!r} outputs {tuple(acts.shape)}; "
                    "painting needs N x C x H x W"
                )
            sample = _Sample(latent, acts, to_uint8(pixels))
            if not self._tail_checked:
                self._tail = self._children_after(acts, pixels)
                self._tail_checked = True
            self._samples[key] = sample
            while len(self._samples) > self.keep:
                self._samples.popitem(last=False)
        self._samples.move_to_end(key)
        return sample

    def _children_after(self, acts: torch.Tensor, pixels: torch.Tensor) -> Generator | None:
        """The top-level children after the layer, as a generator of the layer's output, when they give
        the generator's own image from it; None otherwise."""
        children = list(self.generator.model.named_children())
        names = [name for name, _ in children]
        if self.layer not in names:
            return None
        after = children[names.index(self.layer) + 1 :]
        tail = Generator(
            nn.Sequential(OrderedDict(after)),
            latent_shape=tuple(acts.shape[1:]),
            where=f"{self.generator.where} after {self.layer}",
            output_range=self.generator.output_range,
            device=str(self.generator.device),
        )
        try:
            resumed, _ = tail.run(acts.clone())
        except Exception:  # a forward that is not its children in order may fail on their outputs
            return None
        same = resumed.shape == pixels.shape and bool(torch.allclose(resumed, pixels, rtol=1e-4, atol=1e-5))
        return tail if same else None

    def _apply(
        self, acts: torch.Tensor, edit: BrushEdit, image_size: tuple[int, ...], number: int
    ) -> torch.Tensor:
        where = f"edit {number}"
        if edit.action not in ACTIONS:
            raise DissectionError(f"{where}: action {edit.action!r} is not one of {', '.join(ACTIONS)}")
        units = int(acts.shape[1])
        if not edit.channels:
            raise DissectionError(f"{where}: name at least one unit")
        bad = [c for c in edit.channels if not 0 <= c < units]
        if bad:
            raise DissectionError(
                f"{where}: layer {self.layer!r} has units 1..{units}; no unit {bad[0] + 1} (channel {bad[0]})"
            )
        mask = np.asarray(edit.mask)
        if mask.shape != tuple(image_size):
            raise DissectionError(
                f"{where}: the brush is {mask.shape[1] if mask.ndim > 1 else '?'} x {mask.shape[0]} px; "
                f"the images are {image_size[1]} x {image_size[0]} px"
            )
        fill = torch.zeros(units, dtype=torch.float32)
        if edit.action == "add":
            if len(edit.values) != len(edit.channels):
                raise DissectionError(
                    f"{where}: 'add' needs one value per unit ({len(edit.channels)}), not {len(edit.values)}"
                )
            if not all(np.isfinite(edit.values)):
                raise DissectionError(f"{where}: the values to add must be finite numbers")
            fill[list(edit.channels)] = torch.tensor(edit.values, dtype=torch.float32)
        cells = layer_cells(mask.astype(bool), (int(acts.shape[2]), int(acts.shape[3])))
        return insert(edit.channels, fill, cells)(acts)
