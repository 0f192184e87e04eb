"""Loading a generator and a segmenter, and running the generator with a layer recorded or edited.

A generator is a module mapping a latent batch (N x latent shape) to N x 3 x H x W images whose values span
`output_range` ([-1, 1], the GAN convention, unless told otherwise). It comes as a TorchScript file (with
its latent shape given) or as a toy generator checkpoint from `train-toy-generator`. An eager module's
layers are read and edited with forward hooks that remove themselves; a TorchScript module runs no hooks,
so its layer must be one of its top-level children and its forward the children in order (checked on the
first batch against the module's own output).

A segmenter is a `dissection.convert.segment.Segmenter`: a TorchScript file with a classes.csv, or a toy
segmenter checkpoint from `train-toy-segmenter` (which holds its classes and normalization).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dissection.convert.segment import Segmenter, SegmenterClass, read_classes
from dissection.errors import LayerError, ModelError
from dissection.gan.toys import ToyGenerator, ToySegmenter
from dissection.hooks import capture_outputs, resolve_layer
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.sources import resolve_device

Edit = Callable[[torch.Tensor], torch.Tensor]
"""A layer edit: the layer's output in, the output the rest of the generator sees out."""


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index`'s latent: samples are reproducible one by one, in any order or shard."""
    if seed < 0 or index < 0:
        raise ModelError(f"seed {seed} and sample index {index} must not be negative")
    return int(np.random.SeedSequence([seed, index]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


@contextmanager
def edit_outputs(model: nn.Module, edits: Mapping[str, Edit]) -> Iterator[None]:
    """Replace each named layer's output by `edit(output)` on every forward inside the block."""
    handles = []
    try:
        for name, edit in edits.items():

            def hook(_module: nn.Module, _inputs: object, output: object, edit: Edit = edit) -> torch.Tensor:
                assert isinstance(output, torch.Tensor)
                return edit(output)

            handles.append(resolve_layer(model, name).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class Generator:
    """A generator ready to run: latents from (seed, index), images in [0, 1], a layer recorded or edited."""

    def __init__(
        self,
        model: nn.Module,
        *,
        latent_shape: Sequence[int],
        where: str,
        output_range: tuple[float, float] = (-1.0, 1.0),
        device: str = "auto",
    ) -> None:
        if not latent_shape or any(int(d) < 1 for d in latent_shape):
            raise ModelError(f"generator {where}: latent shape {tuple(latent_shape)} must be positive sizes")
        low, high = output_range
        if not high > low:
            raise ModelError(f"generator {where}: output range {output_range} must rise")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.latent_shape = tuple(int(d) for d in latent_shape)
        self.where = where
        self.output_range = (float(low), float(high))
        self.scripted = isinstance(model, torch.jit.ScriptModule)
        self._checked_sequence = False

    def layer_names(self) -> list[str]:
        if self.scripted:
            return [name for name, _ in self.model.named_children()]
        return [name for name, _ in self.model.named_modules() if name]

    def check_layers(self, layers: Sequence[str]) -> None:
        """Refuse a layer the generator does not have, naming the generator and its layers."""
        if not layers:
            raise LayerError(f"generator {self.where}: name at least one layer to dissect")
        valid = self.layer_names()
        for layer in layers:
            if layer not in valid:
                shown = ", ".join(valid[:60]) + (f", … ({len(valid)} in all)" if len(valid) > 60 else "")
                kind = "top-level child (TorchScript runs no hooks)" if self.scripted else "layer"
                raise LayerError(f"generator {self.where} has no {kind} {layer!r}; valid: {shown}")

    def latents(self, seed: int, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """N x latent shape standard normal latents, sample i's drawn from `sample_seed(seed, i)`."""
        rows = [
            torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(sample_seed(seed, int(i))))
            for i in indices
        ]
        return torch.stack(rows).to(self.device)

    def run(
        self,
        latents: torch.Tensor,
        *,
        record: Sequence[str] = (),
        edits: Mapping[str, Edit] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(images N x 3 x H x W in [0, 1], {layer: its output}) for a latent batch; `edits` change layers on
        the way (recorded outputs are the layers' own, before their edit)."""
        edits = edits or {}
        with torch.no_grad():
            if self.scripted:
                output, recorded = self._run_children(latents, record, edits)
            else:
                try:
                    with ExitStack() as stack:
                        recorded = stack.enter_context(capture_outputs(self.model, record))
                        stack.enter_context(edit_outputs(self.model, edits))
                        output = self.model(latents)
                except LayerError as error:
                    raise LayerError(f"generator {self.where}: {error}") from None
                recorded = dict(recorded)
        return self._pixels(output, len(latents)), recorded

    def _run_children(
        self, latents: torch.Tensor, record: Sequence[str], edits: Mapping[str, Edit]
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        if not self._checked_sequence:
            own, x = self.model(latents), latents
            for _, child in self.model.named_children():
                x = child(x)
            if not isinstance(own, torch.Tensor) or not isinstance(x, torch.Tensor) or own.shape != x.shape:
                same = False
            else:
                same = bool(torch.allclose(own, x, rtol=1e-4, atol=1e-5))
            if not same:
                raise ModelError(
                    f"TorchScript generator {self.where}: its forward is not its children run in order, so a "
                    "layer cannot be read from it; script an nn.Sequential, or save a toy-style checkpoint"
                )
            self._checked_sequence = True
        recorded = {}
        x = latents
        for name, child in self.model.named_children():
            x = child(x)
            if name in record:
                recorded[name] = x.detach().clone()
            if name in edits:
                x = edits[name](x)
        return x, recorded

    def _pixels(self, output: Any, count: int) -> torch.Tensor:
        if (
            not isinstance(output, torch.Tensor)
            or output.dim() != 4
            or output.shape[0] != count
            or output.shape[1] != 3
        ):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ModelError(
                f"generator {self.where} outputs {shape} for {count} latents; a generator must output "
                "N x 3 x H x W images"
            )
        low, high = self.output_range
        return ((output.float() - low) / (high - low)).clamp_(0.0, 1.0)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold the module's code (`<name>/code/…`); `torch.save` archives do not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _load_file(path: Path, what: str) -> tuple[nn.Module | None, dict[str, Any] | None]:
    """(TorchScript module, None) or (None, checkpoint dict)."""
    if not path.is_file():
        raise ModelError(f"{what} file {path} does not exist")
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu"), None
        except Exception as error:  # TorchScript's loader raises many types for a damaged file
            raise ModelError(
                f"{path}: cannot load this TorchScript {what} ({type(error).__name__})"
            ) from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a foreign file
        raise ModelError(
            f"{path}: neither a TorchScript file nor a toy {what} checkpoint ({type(error).__name__})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise ModelError(f"{path}: neither a TorchScript file nor a toy {what} checkpoint")
    return None, checkpoint


def _load_state(model: nn.Module, checkpoint: dict[str, Any], path: Path) -> None:
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError, TypeError) as error:
        first = str(error).splitlines()[0][:300]
        raise ModelError(f"{path}: its weights do not fit a {checkpoint.get('arch')} ({first})") from None


def load_generator(
    path: str | Path,
    *,
    latent_shape: Sequence[int] | None = None,
    output_range: tuple[float, float] | None = None,
    device: str = "auto",
) -> Generator:
    """A TorchScript generator (give `latent_shape`) or a toy generator checkpoint (its own shape and
    range, unless given)."""
    path = Path(path)
    scripted, checkpoint = _load_file(path, "generator")
    if scripted is not None:
        if latent_shape is None:
            raise ModelError(f"TorchScript generator {path}: give its latent shape, e.g. --latent-shape 512")
        return Generator(
            scripted,
            latent_shape=latent_shape,
            where=str(path),
            output_range=output_range or (-1.0, 1.0),
            device=device,
        )
    assert checkpoint is not None
    if checkpoint.get("arch") != "toy-generator":
        raise ModelError(f"{path}: not a toy generator checkpoint (arch {checkpoint.get('arch')!r})")
    model = ToyGenerator(width=int(checkpoint["width"]), size=int(checkpoint["size"]))
    _load_state(model, checkpoint, path)
    return Generator(
        model,
        latent_shape=latent_shape or checkpoint["latent_shape"],
        where=str(path),
        output_range=output_range or tuple(checkpoint["output_range"]),
        device=device,
    )


def load_segmenter(
    path: str | Path,
    *,
    mask_size: tuple[int, int],
    classes: str | Path | None = None,
    thresholds: Sequence[float] = (0.0,),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str = "auto",
) -> Segmenter:
    """A TorchScript segmenter with its classes.csv, or a toy segmenter checkpoint (holding its classes,
    mean and std)."""
    path = Path(path)
    scripted, checkpoint = _load_file(path, "segmenter")
    model: nn.Module
    if scripted is not None:
        if classes is None:
            raise ModelError(f"TorchScript segmenter {path}: give its classes file, --classes classes.csv")
        model, names = scripted, read_classes(classes)
        default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    else:
        assert checkpoint is not None
        if checkpoint.get("arch") != "toy-segmenter":
            raise ModelError(f"{path}: not a toy segmenter checkpoint (arch {checkpoint.get('arch')!r})")
        names = (
            read_classes(classes)
            if classes is not None
            else [SegmenterClass(name, category) for name, category in checkpoint["classes"]]
        )
        model = ToySegmenter(classes=len(checkpoint["classes"]), width=int(checkpoint["width"]))
        _load_state(model, checkpoint, path)
        default_mean, default_std = tuple(checkpoint["mean"]), tuple(checkpoint["std"])
    return Segmenter(
        model,
        names,
        mask_size=mask_size,
        thresholds=thresholds,
        mean=mean or default_mean,
        std=std or default_std,
        device=device,
        where=f"segmenter {path}",
    )
