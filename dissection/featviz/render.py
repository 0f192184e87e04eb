"""Optimizing images for units: several units as one batch, Adam for a fixed number of steps, seeded.

The objective of image i is ±(mean over the map of its unit's activation), read at the layer through
`dissection.hooks.capture_outputs`; with `diversity` K > 1 each unit gets K images and the objective subtracts
a penalty on the cosine similarity of their Gram matrices of the whole layer (Distill 2017, "Diversity"), so
that the K images find different ways to drive the unit. Images live in [0, 1] RGB and are normalized with
the model's mean and std inside the forward, as `dissection.sources` does for probe images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dissection.errors import LayerError
from dissection.featviz.param import random_spectrum, spectrum_to_image
from dissection.featviz.transforms import Transforms
from dissection.hooks import capture_outputs, resolve_layer, with_output_layer
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.sources import Progress, resolve_device

Direction = Literal["positive", "negative"]

"""The layer name that means the model's own output (a network traced up to its feature map): the only way
to read a TorchScript model, which runs no forward hooks."""


@dataclass(frozen=True)
class Recipe:
    """The optimization's settings; the defaults are Lucid's (`render_vis`, `fft_image`, Adam at 0.05)."""

    steps: int = 256
    lr: float = 0.05
    decay_power: float = 1.0
    init_sd: float = 0.01
    diversity: int = 1
    diversity_weight: float = 0.5
    redirect_relu: bool = True
    transforms: Transforms = field(default_factory=Transforms)


@dataclass(frozen=True)
class Visualization:
    """The optimized images and what they do to the layer (one row per image, grouped by unit, then
    direction, then diversity index)."""

    layer: str
    images: torch.Tensor  # N x 3 x H x W in [0, 1], rounded to 8 bits: exactly what the PNGs hold
    channels: tuple[int, ...]
    directions: tuple[Direction, ...]
    indices: tuple[int, ...]  # the image's number among its unit's K diverse images
    mean_activation: torch.Tensor  # N: the unit's activation, mean over the map
    max_activation: torch.Tensor  # N: the unit's activation, max over the map (result.json's statistic)
    layer_max: torch.Tensor  # N x C: every unit's max over the map, for selectivity


def normalize(
    pixels: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """RGB in [0, 1] → the model's input, `(pixels - mean) / std` per channel."""
    shift = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    scale = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    return (pixels - shift) / scale


@contextmanager
def layer_reader(
    model: nn.Module, layer: str, *, grad: bool = False
) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """A function from the model's (normalized) input to `layer`'s N x C x H x W output; with `grad` the
    output keeps its graph. `output` is the model's own output (all a TorchScript model offers). The hook is
    removed when the block ends."""
    wrapped = with_output_layer(model, [layer])
    resolve_layer(wrapped, layer)
    with capture_outputs(wrapped, [layer], detach=not grad) as captured:

        def read(inputs: torch.Tensor) -> torch.Tensor:
            wrapped(inputs)
            return captured[layer]

        yield read


def layer_shape(
    model: nn.Module,
    layer: str,
    size: int,
    *,
    device: str | torch.device = "auto",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[int, int, int]:
    """(channels, h, w) of `layer` for a size x size image: checks the layer before any optimization."""
    target = resolve_device(device) if isinstance(device, str) else device
    model = model.eval().to(target)
    grey = torch.full((1, 3, size, size), 0.5, device=target)
    with torch.no_grad(), layer_reader(model, layer) as read:
        _, channels, height, width = read(normalize(grey, mean, std)).shape
    return channels, height, width


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward, for an image whose ReLU gradient is zero everywhere, lets through the gradient
    that would raise negative inputs (Lucid's `redirected_relu_grad`): a unit that no position of the start
    image activates still gets a direction to move in, instead of none."""

    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inputs)
        return inputs.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (inputs,) = ctx.saved_tensors
        negative = inputs < 0
        relu_grad = grad.masked_fill(negative, 0)
        redirected = grad.masked_fill(negative & (grad > 0), 0)
        stuck = relu_grad.flatten(1).norm(dim=1) == 0
        return torch.where(stuck.view(-1, *[1] * (grad.dim() - 1)), redirected, relu_grad)


@contextmanager
def redirected_relus(model: nn.Module) -> Iterator[None]:
    """Every `nn.ReLU` of the model computes `_RedirectedReLU` (out of place) inside the block."""
    relus = [module for module in model.modules() if isinstance(module, nn.ReLU)]
    try:
        for module in relus:
            module.forward = _RedirectedReLU.apply  # type: ignore[method-assign]
        yield
    finally:
        for module in relus:
            module.__dict__.pop("forward", None)


def diversity_penalty(acts: torch.Tensor, group: int) -> torch.Tensor:
    """Σ over groups of consecutive `group` images of Σ_{i≠j} cos(G_i, G_j) / group, G the C x C Gram
    matrix of an image's whole layer (Lucid's `objectives.diversity`)."""
    n, channels = acts.shape[:2]
    flat = acts.reshape(n, channels, -1)
    grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(n, -1), dim=1, eps=1e-10)
    grams = grams.reshape(n // group, group, -1)
    similarity = grams @ grams.transpose(1, 2)
    off_diagonal = similarity.sum((1, 2)) - similarity.diagonal(dim1=1, dim2=2).sum(1)
    return (off_diagonal / group).sum()


def visualize(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    *,
    size: int = 128,
    recipe: Recipe | None = None,
    seed: int = 0,
    negative: bool = False,
    device: str | torch.device = "auto",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> Visualization:
    """Optimize `recipe.diversity` images per channel (and as many minimizing it with `negative`).

    Up to `batch_size` images are optimized together; a unit's images always share a batch, since the
    diversity term couples them. The same arguments and seed give the same images bit for bit on the CPU.
    """
    recipe = recipe or Recipe()
    target = resolve_device(device) if isinstance(device, str) else device
    count, _, _ = layer_shape(model, layer, size, device=target, mean=mean, std=std)
    outside = [channel for channel in channels if not 0 <= channel < count]
    if not channels or outside:
        raise LayerError(
            f"layer {layer!r} has {count} channels (0-{count - 1}); asked for channels {list(channels)[:8]}"
            + (f", of which {outside[:8]} are outside it" if outside else "")
        )
    directions: tuple[Direction, ...] = ("positive", "negative") if negative else ("positive",)
    per_unit = len(directions) * recipe.diversity
    rows = [
        (channel, direction, index)
        for channel in channels
        for direction in directions
        for index in range(recipe.diversity)
    ]
    chunk = max(1, batch_size // per_unit) * per_unit
    chunks = [rows[start : start + chunk] for start in range(0, len(rows), chunk)]
    generator = torch.Generator().manual_seed(seed)
    total = recipe.steps * len(chunks)
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    for number, part in enumerate(chunks):

        def report(step: int, number: int = number) -> None:
            if progress:
                progress(number * recipe.steps + step, total)

        images = _optimize(model, layer, part, size, recipe, generator, target, mean, std, report)
        with torch.no_grad(), layer_reader(model, layer) as read:
            parts.append((images, read(normalize(images.to(target), mean, std)).float().cpu()))
    images = torch.cat([images for images, _ in parts])
    acts = torch.cat([acts for _, acts in parts])
    unit_maps = acts[torch.arange(len(rows)), torch.tensor([channel for channel, _, _ in rows])]
    return Visualization(
        layer=layer,
        images=images,
        channels=tuple(channel for channel, _, _ in rows),
        directions=tuple(direction for _, direction, _ in rows),
        indices=tuple(index for _, _, index in rows),
        mean_activation=unit_maps.mean((1, 2)),
        max_activation=unit_maps.amax((1, 2)),
        layer_max=acts.amax((2, 3)),
    )


def _optimize(
    model: nn.Module,
    layer: str,
    rows: Sequence[tuple[int, Direction, int]],
    size: int,
    recipe: Recipe,
    generator: torch.Generator,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    report: Callable[[int], None],
) -> torch.Tensor:
    """One batch of images, rounded to 8 bits on the CPU. Gradients go to the spectrum only; the model's
    parameters get none."""
    spectrum = random_spectrum(len(rows), size, size, generator, recipe.init_sd).to(device).requires_grad_()
    optimizer = torch.optim.Adam([spectrum], lr=recipe.lr)
    index = torch.arange(len(rows), device=device)
    channel = torch.tensor([c for c, _, _ in rows], device=device)
    sign = torch.tensor([1.0 if d == "positive" else -1.0 for _, d, _ in rows], device=device)
    redirect = redirected_relus(model) if recipe.redirect_relu else nullcontext()
    with layer_reader(model, layer, grad=True) as read, redirect:
        for step in range(recipe.steps):
            images = spectrum_to_image(spectrum, size, size, recipe.decay_power)
            acts = read(normalize(recipe.transforms(images, generator), mean, std))
            objective = (sign * acts[index, channel].mean((1, 2))).sum()
            if recipe.diversity > 1:
                objective = objective - recipe.diversity_weight * diversity_penalty(acts, recipe.diversity)
            (spectrum.grad,) = torch.autograd.grad(-objective, [spectrum])
            optimizer.step()
            report(step + 1)
    with torch.no_grad():
        final = spectrum_to_image(spectrum, size, size, recipe.decay_power)
    return (final * 255).round().div(255).cpu()
