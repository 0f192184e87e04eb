"""Grad-CAM (Selvaraju et al.): for models without a GAP + linear head, or any layer of one that has it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dissection.cam.heads import check_hookable, device_of, inspect_model
from dissection.cam.maps import CamResult, ClassChoice, check_images, select_classes
from dissection.errors import LayerError, ModelError
from dissection.hooks import resolve_layer
from dissection.tokens import TokenRule, parse_rule, resolve_layout


def gradcam_layer(model: nn.Module, example: torch.Tensor) -> tuple[str, bool]:
    """The default Grad-CAM map: the CAM feature map when there is a GAP head, else the last feature map."""
    found = inspect_model(model, example)
    if found.head is not None:
        return found.head.feature_layer, found.head.relu
    if found.last_feature_layer is None:
        raise LayerError(
            f"{type(model).__name__}: {found.no_head_reason}; Grad-CAM needs a convolutional feature map"
        )
    return found.last_feature_layer, False


@contextmanager
def _gradient_map(
    model: nn.Module,
    layer: str,
    relu: bool,
    tokens: TokenRule | None = None,
    input_size: tuple[int, int] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Hand the network a copy of `layer`'s output and keep the map whose gradient Grad-CAM takes.

    Without `relu`, the kept map is a graph root and the network continues on a clone, so in-place operations
    after the layer cannot change it. With `relu` (densenet: F.relu(features, inplace=True)) the network gets
    relu(output) itself, so its in-place relu keeps the values and the gradient is the one with respect to the
    map the head pools, as in CAM. With a `tokens` rule the kept map is the output read as N x C x H x W
    (`dissection.tokens`), and the network continues on that map laid out as tokens again.
    """
    check_hookable(model)
    module = resolve_layer(model, layer)
    kept: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor:
        if tokens is not None and isinstance(output, torch.Tensor):
            layout = resolve_layout(layer, tuple(output.shape), tokens, input_size)
            if layout.kind != "nchw":
                kept["map"] = layout.to_map(output).detach().requires_grad_()
                return layout.to_output(kept["map"].clone(), output)
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise LayerError(f"layer {layer!r} outputs {shape}; Grad-CAM needs an N x C x H x W feature map")
        root = output.detach().requires_grad_()
        if relu:
            kept["map"] = torch.relu(root).clone()
            return kept["map"]
        kept["map"] = root
        return root.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield kept
    finally:
        handle.remove()


def grad_cams(
    model: nn.Module,
    images: torch.Tensor,
    *,
    classes: ClassChoice | None = None,
    topk: int | None = None,
    layer: str | None = None,
    relu: bool | None = None,
    tokens: TokenRule | str | None = None,
) -> CamResult:
    """Grad-CAM: ReLU(Σ_k α_k^c A_k) with α_k^c the spatial mean of ∂y_c/∂A_k.

    For a GAP + linear head ∂y_c/∂A_k = w_k^c / (h·w) everywhere, so Grad-CAM = ReLU(CAM) / (h·w).
    `tokens` (a rule of `dissection.tokens`) lets `layer` be a transformer block: A is its reshaped output.
    """
    check_images(images)
    images = images.to(device_of(model))
    if layer is None:
        layer, found_relu = gradcam_layer(model, images[:1])
        relu = found_relu if relu is None else relu
    rule = None if tokens is None else parse_rule(tokens)
    size = (images.shape[2], images.shape[3])
    with torch.enable_grad(), _gradient_map(model, layer, bool(relu), rule, size) as kept:
        logits = model(images)
        if "map" not in kept:
            raise LayerError(f"layer {layer!r} did not run in the forward pass")
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ModelError("Grad-CAM needs a model whose output is an N x classes tensor of logits")
        chosen = select_classes(logits.detach(), classes, topk)
        activation = kept["map"]
        maps = []
        for j in range(chosen.shape[1]):
            score = logits.gather(1, chosen[:, j : j + 1]).sum()
            (gradient,) = torch.autograd.grad(score, activation, retain_graph=j < chosen.shape[1] - 1)
            alpha = gradient.mean(dim=(2, 3), keepdim=True)
            maps.append(torch.relu((alpha * activation.detach()).sum(dim=1)))
    return CamResult(torch.stack(maps, dim=1), chosen, logits.detach(), "gradcam")
