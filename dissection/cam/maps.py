"""Class activation maps: M_c = Σ_k w_k^c f_k from one forward pass and the head's weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dissection.cam.heads import GapHead, detect_gap_head, device_of, head_parameters
from dissection.errors import DissectionError, LayerError
from dissection.hooks import capture_outputs

ClassChoice = int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor


class ClassIndexError(DissectionError):
    """A requested class index or name is not one of the model's classes."""


@dataclass(frozen=True)
class CamResult:
    """Raw maps at feature-map resolution (N x k x h x w) for the classes (N x k) of each image."""

    maps: torch.Tensor
    classes: torch.Tensor
    logits: torch.Tensor
    method: str

    @property
    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=1)


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DissectionError(f"images must be a non-empty N x 3 x H x W tensor, got {shape}")


def select_classes(
    logits: torch.Tensor, classes: ClassChoice | None = None, topk: int | None = None
) -> torch.Tensor:
    """Class indices as an N x k long tensor: given per image (one or several each) or the top-k of each."""
    n, num_classes = logits.shape
    if (classes is None) == (topk is None):
        raise ClassIndexError("give either classes or topk")
    if topk is not None:
        if not 1 <= topk <= num_classes:
            raise ClassIndexError(
                f"topk must be between 1 and {num_classes} (the model's classes), got {topk}"
            )
        return logits.topk(topk, dim=1).indices
    chosen = torch.as_tensor(classes, dtype=torch.long)
    if chosen.dim() == 0:
        chosen = chosen.expand(n)
    if chosen.dim() == 1:
        chosen = chosen.unsqueeze(1)
    if chosen.dim() != 2 or chosen.shape[0] != n:
        raise ClassIndexError(f"classes must give one or more classes for each of the {n} images")
    bad = chosen[(chosen < 0) | (chosen >= num_classes)]
    if bad.numel():
        raise ClassIndexError(
            f"class index {int(bad[0])} is out of range: the model has {num_classes} classes "
            f"(0 to {num_classes - 1})"
        )
    return chosen.to(logits.device)


def gap_features(model: nn.Module, images: torch.Tensor, head: GapHead) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: the map the head pools (N x K x h x w) and the logits (N x C)."""
    check_images(images)
    with torch.no_grad(), capture_outputs(model, [head.feature_layer]) as captured:
        logits = model(images.to(device_of(model)))
    if head.feature_layer not in captured:
        raise LayerError(f"layer {head.feature_layer!r} did not run in the forward pass")
    features = captured[head.feature_layer]
    return (features.relu() if head.relu else features), logits


def cam_from_features(features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """M_c = Σ_k w_k^c f_k for each image's classes: one batched matrix product, N x k x h x w."""
    return torch.einsum("njk,nkhw->njhw", weight[classes], features)


def class_activation_maps(
    model: nn.Module,
    images: torch.Tensor,
    *,
    classes: ClassChoice | None = None,
    topk: int | None = None,
    head: GapHead | None = None,
) -> CamResult:
    """Raw CAMs (no bias, no ReLU, no normalization) for the given classes or the top-k of each image.

    Without `head` one extra single-image pass finds it; pass `detect_gap_head`'s result when calling often.
    """
    check_images(images)
    head = head or detect_gap_head(model, images[:1])
    features, logits = gap_features(model, images, head)
    weight, _bias = head_parameters(model, head)
    chosen = select_classes(logits, classes, topk)
    return CamResult(cam_from_features(features, weight, chosen), chosen, logits, "cam")
