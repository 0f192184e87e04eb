"""Where a dissection reads activations: a model's forward pass, an .npy of precomputed activations, or the
cache that a scan writes so that the tally and the tiles need no second forward pass.

Every source yields (image indices, {layer: images x channels x h x w float32 tensor}) batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dissection.broden import ProbeSet
from dissection.data import image_batches
from dissection.errors import DissectionError, LayerError, ModelError
from dissection.fold import fold_batchnorm
from dissection.hooks import capture_outputs, resolve_layer, with_output_layer
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.tokens import TokenLayout, TokenRule, parse_rule

Progress = Callable[[int, int], None]
"""`progress(done, total)`, called as a pass advances."""


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DissectionError("--device cuda: no CUDA device is available")
    return torch.device(device)


class ModelActivations:
    """Activations of named layers of a model, one forward per batch, images normalized by mean/std.

    `tokens` is the rule that reads a transformer layer's output as N x C x H x W (`dissection.tokens`);
    `layouts` records, per layer, how it was read (which tokens were dropped).

    The forward runs a copy of the model with each batch norm folded into the convolution before it, where
    no layer being read can tell (`dissection.fold`); the caller's model keeps its own modules. A model with
    2-d convolutions runs channels-last, weights and input alike: the decoded images already lie in memory
    that way, and convolutions whose weights share their input's layout skip a reorder per call (on the CPU
    and on GPUs). The captured outputs are copied to the usual layout, so nothing downstream sees a
    difference beyond float rounding. A model whose forward cannot take channels-last tensors (a `.view` on
    a feature map) fails on its first batch and is then run in the contiguous layout instead.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        device: str = "auto",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        workers: int | None = None,
        tokens: TokenRule | str = "auto",
    ) -> None:
        if not layers:
            raise LayerError("name at least one layer to dissect")
        model = with_output_layer(model, layers)
        for layer in layers:
            resolve_layer(model, layer)
        model = fold_batchnorm(model, keep=layers)  # in eval mode, folded or not
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.layers = tuple(layers)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.workers = workers
        self.tokens = parse_rule(tokens)
        self.layouts: dict[str, TokenLayout] = {}
        self.channels_last = any(isinstance(module, nn.Conv2d) for module in self.model.modules())
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _forward(self, pixels: torch.Tensor, *, first: bool) -> None:
        images = (pixels.to(self.device) - self.mean) / self.std
        if not self.channels_last:
            self.model(images.contiguous())
            return
        try:
            self.model(images.contiguous(memory_format=torch.channels_last))
        except RuntimeError:
            if not first:
                raise
            self.channels_last = False
            self.model.to(memory_format=torch.contiguous_format)
            self.model(images.contiguous())

    def batches(
        self, probe: ProbeSet, indices: Sequence[int] | np.ndarray, *, batch_size: int
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        capture = capture_outputs(
            self.model, self.layers, tokens=self.tokens, input_size=probe.image_size, layouts=self.layouts
        )
        with torch.no_grad(), capture as captured:
            for number, (rows, pixels) in enumerate(
                image_batches(probe, indices, batch_size=batch_size, workers=self.workers)
            ):
                self._forward(pixels, first=number == 0)
                for layer in self.layers:
                    if captured[layer].shape[0] != len(rows):
                        raise LayerError(
                            f"layer {layer!r} outputs {tuple(captured[layer].shape)} for {len(rows)} images; "
                            "the batch must come first (sequence-first tokens are not supported)"
                        )
                yield rows, {layer: captured[layer].float() for layer in self.layers}


class ArrayActivations:
    """Precomputed activations: an .npy of images x channels x h x w, rows in index.csv order.

    Rows are read with plain file reads, not a memory map, so that a file larger than RAM never inflates the
    process's resident memory. `rows[i]` is the file row of image index i (default: i).
    """

    def __init__(
        self,
        path: str | Path,
        layer: str,
        probe: ProbeSet,
        *,
        device: str = "auto",
        rows: np.ndarray | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"activations file {self.path} does not exist")
        try:
            with self.path.open("rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else (np.lib.format.read_array_header_2_0)
                )
                shape, fortran, dtype = read_header(handle)
                self.offset = handle.tell()
        except (OSError, ValueError) as error:
            raise ModelError(f"{self.path}: not a readable .npy file ({error})") from None
        if len(shape) != 4 or fortran or dtype.hasobject:
            raise LayerError(
                f"{self.path}: activations have shape {shape}; need a C-order images x units x h x w"
            )
        if rows is None and shape[0] != len(probe):
            raise ModelError(
                f"{self.path}: holds {shape[0]} rows of activations but {probe.root / 'index.csv'} "
                f"lists {len(probe)} images"
            )
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype: np.dtype = dtype
        self.rows = np.arange(len(probe)) if rows is None else rows
        self.layers = (layer,)
        self.device = resolve_device(device)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        file_rows = self.rows[indices]
        if (file_rows < 0).any():
            missing = int(indices[file_rows < 0][0])
            raise DissectionError(f"{self.path}: holds no activations for image {missing}")
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
        self, probe: ProbeSet, indices: Sequence[int] | np.ndarray, *, batch_size: int
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        indices = np.asarray(indices, np.int64)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            yield chunk, {self.layers[0]: torch.from_numpy(self._read(chunk)).to(self.device)}

    def maps(self, indices: np.ndarray) -> np.ndarray:
        """Activation maps (float32) of the given image indices, for tiles."""
        return self._read(np.asarray(indices, np.int64))


ActivationSource = ModelActivations | ArrayActivations


class CacheWriter:
    """Appends float32 rows to an .npy file through ordinary writes (no memory map, so no resident growth)."""

    def __init__(self, path: Path, rows: int, row_shape: tuple[int, ...]) -> None:
        self.handle = path.open("wb")
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": (rows, *row_shape),
        }
        np.lib.format.write_array_header_1_0(self.handle, header)

    def write(self, acts: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(acts, np.float32).tobytes())

    def close(self) -> None:
        self.handle.close()


def cached_activations(
    cache_dir: Path, layer: str, probe: ProbeSet, *, device: str = "auto"
) -> ArrayActivations:
    """The activations `scan(..., cache_dir=)` wrote for `layer`, as a source for `tally` and tiles."""
    cache_dir = Path(cache_dir)
    indices = np.load(cache_dir / "indices.npy")
    rows = np.full(len(probe), -1, np.int64)
    rows[indices] = np.arange(len(indices))
    return ArrayActivations(cache_dir / f"{layer}.npy", layer, probe, device=device, rows=rows)


def model_maps(
    source: ModelActivations, probe: ProbeSet, layer: str, *, batch_size: int = 32
) -> Callable[[np.ndarray], np.ndarray]:
    """A `maps(indices)` function for `write_layer` that runs the model on just those images."""

    def maps(indices: np.ndarray) -> np.ndarray:
        batches = source.batches(probe, indices, batch_size=batch_size)
        parts = [outputs[layer].cpu().numpy() for _, outputs in batches]
        return np.concatenate(parts)

    return maps
