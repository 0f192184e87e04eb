"""Class activation maps (Zhou et al., CVPR 2016), Grad-CAM, and predictions explained through their units.

With a head that is global average pooling + one linear layer, logit_c = b_c + Σ_k w_k^c · mean_xy f_k(x, y),
so the map M_c(x, y) = Σ_k w_k^c f_k(x, y) spreads the class score over the last feature map: mean M_c + b_c is
the logit, and w_k^c · mean f_k is what unit k adds to it. The head is found by tracing one forward pass, not
from architecture names, so every torchvision family with such a head and any user model built the same way
work; models without one (alexnet, vgg, mobilenet_v3) get Grad-CAM.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from dissection.errors import DissectionError, LayerError, ModelError
from dissection.hooks import capture_outputs, resolve_layer
from dissection.models import IMAGENET_MEAN, IMAGENET_STD

ClassChoice = int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class ImageError(DissectionError):
    """An image file is missing or cannot be decoded."""


class ClassIndexError(DissectionError):
    """A requested class index or name is not one of the model's classes."""


class UnitLabelError(DissectionError):
    """A dissection result file cannot be read as per-unit labels."""


@dataclass(frozen=True)
class GapHead:
    """Where a global-average-pooling + linear head reads its features.

    `relu` is set when the pooled map is relu(output of `feature_layer`): densenet applies F.relu after
    `features` in forward(), where no module hook can see it.
    """

    feature_layer: str
    linear_layer: str
    relu: bool = False


@dataclass(frozen=True)
class ModelInspection:
    """What one traced forward pass tells about a model's head and last feature map."""

    head: GapHead | None
    no_head_reason: str | None
    last_feature_layer: str | None


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


@dataclass(frozen=True)
class UnitLabel:
    """A unit's dissection label, as far as the result file gives it."""

    label: str
    category: str | None = None
    iou: float | None = None
    interpretable: bool = True


@dataclass(frozen=True)
class UnitContribution:
    """What one channel of the feature map adds to a logit; `unit` numbers it from 1 as dissection reports do."""

    channel: int
    weight: float
    mean_activation: float
    contribution: float
    label: UnitLabel | None = None

    @property
    def unit(self) -> int:
        return self.channel + 1


@dataclass(frozen=True)
class Explanation:
    """One class score of one image as bias + the contribution of each unit, largest first."""

    class_index: int
    logit: float
    probability: float
    bias: float
    units: list[UnitContribution] = field(repr=False)

    def summary(self, class_name: str | None = None, n: int = 3) -> str:
        """The talk's one-liner: "cafeteria 0.90: unit 22 face, unit 2 lamp, unit 42 trademark"."""
        name = class_name if class_name is not None else f"class {self.class_index}"
        parts = []
        for unit in self.units[:n]:
            text = f"unit {unit.unit}"
            if unit.label is not None and unit.label.interpretable:
                text += f" {unit.label.label}"
            parts.append(text)
        return f"{name} {self.probability:.2f}: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------------- images


def load_image(path: str | Path) -> Image.Image:
    """The image as RGB, or an ImageError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageError(f"cannot read image {path}: {error}") from None


def preprocess(
    images: Sequence[Image.Image],
    size: int | None,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """RGB in [0, 1], normalized, as N x 3 x H x W.

    Each image is resized to size x size without cropping, so maps cover the whole image; with `size` None the
    images keep their own (common) size, as the toy model sees its probe set in training.
    """
    if size is None:
        sizes = {image.size for image in images}
        if len(sizes) != 1:
            raise ImageError(f"images of different sizes {sorted(sizes)} need a common input size (--size)")
    else:
        images = [image.resize((size, size), Image.Resampling.BILINEAR) for image in images]
    batch = torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32) for image in images]))
    batch = batch.permute(0, 3, 1, 2) / 255.0
    return (batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------------------- head detection


class _Trace:
    """Outputs of one forward pass: every 4-D output's shape, the values of those a linear layer could pool."""

    def __init__(self, linear_widths: set[int]) -> None:
        self.linear_widths = linear_widths
        self.step = 0
        self.maps: dict[str, tuple[int, torch.Size, nn.Module]] = {}
        self.values: dict[str, torch.Tensor] = {}
        self.linear: tuple[str, torch.Tensor, torch.Tensor] | None = None

    def record(self, name: str, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        self.step += 1
        if isinstance(module, nn.Linear) and inputs and isinstance(inputs[0], torch.Tensor):
            self.linear = (name, inputs[0].detach().clone(), output)
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            self.maps[name] = (self.step, output.shape, module)
            if output.shape[1] in self.linear_widths:
                self.values[name] = output.detach().clone()


@contextmanager
def _traced(model: nn.Module) -> Iterator[_Trace]:
    trace = _Trace({m.in_features for m in model.modules() if isinstance(m, nn.Linear)})
    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(
                    module.register_forward_hook(
                        lambda mod, inp, out, name=name: trace.record(name, mod, inp, out)
                    )
                )
        yield trace
    finally:
        for handle in handles:
            handle.remove()


def _same(pooled: torch.Tensor, reference: torch.Tensor) -> bool:
    """Equal up to float32 rounding, relative to the reference's scale (all zeros must stay zeros)."""
    if pooled.shape != reference.shape:
        return False
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    return torch.allclose(pooled, reference, rtol=1e-4, atol=1e-5 * scale + 1e-30)


def _check_hookable(model: nn.Module) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError("CAM needs forward hooks, which TorchScript models do not run; load the eager model instead")


def inspect_model(model: nn.Module, example: torch.Tensor) -> ModelInspection:
    """Trace one forward pass of `example` (one image is enough) to find the GAP + linear head.

    The head's linear layer is the last Linear to run, its output must be the model's output, and its input
    the spatial mean of a feature map with more than one position (or of its relu). Of modules that return
    the same tensor, the outermost (last to finish) is named, e.g. `layer4` rather than `layer4.1`.
    """
    _check_hookable(model)
    with torch.no_grad(), _traced(model) as trace:
        output = model(example.to(_device_of(model)))
    candidates = sorted(
        ((step, name, shape, module) for name, (step, shape, module) in trace.maps.items()),
        reverse=True,
    )
    spatial = [(name, shape, module) for _, name, shape, module in candidates if shape[2] * shape[3] > 1]
    last_feature = next((name for name, _, module in spatial if not isinstance(module, _POOLS)), None)
    if not trace.maps:
        return ModelInspection(None, "no layer outputs an N x C x H x W feature map", None)
    if last_feature is None:
        return ModelInspection(
            None, f"every feature map is 1 x 1 at input size {tuple(example.shape[2:])}; use larger images", None
        )
    if trace.linear is None:
        return ModelInspection(None, "it has no linear layer", last_feature)
    linear_name, linear_in, linear_out = trace.linear
    if not isinstance(output, torch.Tensor) or output.shape != linear_out.shape or not torch.equal(output, linear_out):
        return ModelInspection(None, f"its output is not the output of its last linear layer {linear_name!r}",
                               last_feature)
    for name, _shape, _module in spatial:
        values = trace.values.get(name)
        if values is None or values.shape[0] != linear_in.shape[0] or linear_in.dim() != 2:
            continue
        if _same(values.mean(dim=(2, 3)), linear_in):
            return ModelInspection(GapHead(name, linear_name, relu=False), None, last_feature)
        if _same(values.relu().mean(dim=(2, 3)), linear_in):
            return ModelInspection(GapHead(name, linear_name, relu=True), None, last_feature)
    width = linear_in.shape[-1]
    return ModelInspection(
        None,
        f"the input of its last linear layer {linear_name!r} ({width} features) is not the spatial mean of any "
        "feature map",
        last_feature,
    )


def detect_gap_head(model: nn.Module, example: torch.Tensor) -> GapHead:
    """The GAP + linear head, or a ModelError saying why there is none and pointing to Grad-CAM."""
    found = inspect_model(model, example)
    if found.head is None:
        raise ModelError(
            f"{type(model).__name__} has no global-average-pooling + linear head ({found.no_head_reason}), so CAM "
            "does not apply; use --method gradcam"
        )
    return found.head


def head_parameters(model: nn.Module, head: GapHead) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's weight (classes x units) and bias (zeros when the linear layer has none)."""
    linear = resolve_layer(model, head.linear_layer)
    if not isinstance(linear, nn.Linear):
        raise LayerError(f"layer {head.linear_layer!r} is a {type(linear).__name__}, not a linear layer")
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else torch.zeros(weight.shape[0], device=weight.device)
    return weight, bias


# -------------------------------------------------------------------------------------------------- CAM


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DissectionError(f"images must be a non-empty N x 3 x H x W tensor, got {shape}")


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def select_classes(
    logits: torch.Tensor, classes: ClassChoice | None = None, topk: int | None = None
) -> torch.Tensor:
    """Class indices as an N x k long tensor: given per image (one or several each) or the top-k of each."""
    n, num_classes = logits.shape
    if (classes is None) == (topk is None):
        raise ClassIndexError("give either classes or topk")
    if topk is not None:
        if not 1 <= topk <= num_classes:
            raise ClassIndexError(f"topk must be between 1 and {num_classes} (the model's classes), got {topk}")
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
            f"class index {int(bad[0])} is out of range: the model has {num_classes} classes (0 to {num_classes - 1})"
        )
    return chosen.to(logits.device)


def gap_features(model: nn.Module, images: torch.Tensor, head: GapHead) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: the map the head pools (N x K x h x w) and the logits (N x C)."""
    _check_images(images)
    with torch.no_grad(), capture_outputs(model, [head.feature_layer]) as captured:
        logits = model(images.to(_device_of(model)))
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
    _check_images(images)
    head = head or detect_gap_head(model, images[:1])
    features, logits = gap_features(model, images, head)
    weight, _bias = head_parameters(model, head)
    chosen = select_classes(logits, classes, topk)
    return CamResult(cam_from_features(features, weight, chosen), chosen, logits, "cam")


# ---------------------------------------------------------------------------------------------- Grad-CAM


def gradcam_layer(model: nn.Module, example: torch.Tensor) -> tuple[str, bool]:
    """The default Grad-CAM map: the CAM feature map when there is a GAP head, else the last feature map."""
    found = inspect_model(model, example)
    if found.head is not None:
        return found.head.feature_layer, found.head.relu
    if found.last_feature_layer is None:
        raise LayerError(f"{type(model).__name__}: {found.no_head_reason}; Grad-CAM needs a convolutional feature map")
    return found.last_feature_layer, False


@contextmanager
def _gradient_map(model: nn.Module, layer: str, relu: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Hand the network a copy of `layer`'s output and keep the map whose gradient Grad-CAM takes.

    Without `relu`, the kept map is a graph root and the network continues on a clone, so in-place operations
    after the layer cannot change it. With `relu` (densenet: F.relu(features, inplace=True)) the network gets
    relu(output) itself, so its in-place relu keeps the values and the gradient is the one with respect to the
    map the head pools, as in CAM.
    """
    _check_hookable(model)
    module = resolve_layer(model, layer)
    kept: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor:
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
) -> CamResult:
    """Grad-CAM (Selvaraju et al.): ReLU(Σ_k α_k^c A_k) with α_k^c the spatial mean of ∂y_c/∂A_k.

    For a GAP + linear head ∂y_c/∂A_k = w_k^c / (h·w) everywhere, so Grad-CAM = ReLU(CAM) / (h·w).
    """
    _check_images(images)
    images = images.to(_device_of(model))
    if layer is None:
        layer, found_relu = gradcam_layer(model, images[:1])
        relu = found_relu if relu is None else relu
    with torch.enable_grad(), _gradient_map(model, layer, bool(relu)) as kept:
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


# ------------------------------------------------------------------------------------- unit contributions


def unit_contributions(features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """w_k^c · mean_xy f_k for each image's classes: N x k x units; their sum + b_c is the logit."""
    return weight[classes] * features.mean(dim=(2, 3)).unsqueeze(1)


def explain_predictions(
    model: nn.Module,
    images: torch.Tensor,
    *,
    classes: ClassChoice | None = None,
    topk: int | None = None,
    head: GapHead | None = None,
    labels: dict[int, UnitLabel] | None = None,
) -> list[list[Explanation]]:
    """For each image and class, the logit as bias + per-unit contributions, each joined with its label."""
    _check_images(images)
    head = head or detect_gap_head(model, images[:1])
    features, logits = gap_features(model, images, head)
    weight, bias = head_parameters(model, head)
    chosen = select_classes(logits, classes, topk)
    parts = unit_contributions(features, weight, chosen).cpu()
    means = features.mean(dim=(2, 3)).cpu()
    probabilities = torch.softmax(logits.float(), dim=1).cpu()
    weight, bias, logits, chosen = weight.cpu(), bias.cpu(), logits.cpu(), chosen.cpu()
    labels = labels or {}
    explained = []
    for n in range(chosen.shape[0]):
        per_image = []
        for j in range(chosen.shape[1]):
            c = int(chosen[n, j])
            order = torch.argsort(parts[n, j], descending=True, stable=True).tolist()
            units = [
                UnitContribution(
                    channel=k,
                    weight=float(weight[c, k]),
                    mean_activation=float(means[n, k]),
                    contribution=float(parts[n, j, k]),
                    label=labels.get(k),
                )
                for k in order
            ]
            per_image.append(
                Explanation(c, float(logits[n, c]), float(probabilities[n, c]), float(bias[c]), units)
            )
        explained.append(per_image)
    return explained


def _first(entry: dict[str, Any], keys: Sequence[str]) -> Any:
    return next((entry[key] for key in keys if entry.get(key) is not None), None)


def read_unit_labels(path: str | Path, *, layer: str | None = None, channels: int | None = None) -> dict[int, UnitLabel]:
    """Labels by 0-based channel from a dissection result.json (`{"layer", "num_units", "units": [...]}`).

    Each unit entry gives `channel` (0-based) or else `unit` (1-based, NetDissect's numbering), and `label`,
    `category`, `iou`, `interpretable`; entries without a channel or label are skipped. A file of another layer
    than `layer`, or with another number of units than the layer's `channels`, is refused: its unit numbers
    would name other units.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnitLabelError(f"dissection result {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnitLabelError(f"{path}: not a readable JSON file ({error})") from None
    entries = data.get("units") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UnitLabelError(f"{path}: no 'units' list; expected a dissection result.json")
    found_layer = data.get("layer")
    if layer is not None and isinstance(found_layer, str) and found_layer != layer:
        raise UnitLabelError(f"{path} dissects layer {found_layer!r}, but the CAM feature layer is {layer!r}")
    count = data.get("num_units", len(entries))
    if channels is not None and isinstance(count, int) and count != channels:
        raise UnitLabelError(f"{path} has {count} units, but layer {layer or found_layer!r} has {channels} channels")
    labels: dict[int, UnitLabel] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        channel = entry.get("channel")
        if not isinstance(channel, int) and isinstance(entry.get("unit"), int):
            channel = entry["unit"] - 1
        label = _first(entry, ("label", "concept"))
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0 or label is None:
            continue
        iou = entry.get("iou")
        labels[channel] = UnitLabel(
            str(label),
            str(entry["category"]) if entry.get("category") is not None else None,
            float(iou) if isinstance(iou, int | float) and not isinstance(iou, bool) and math.isfinite(iou) else None,
            bool(entry.get("interpretable", True)),
        )
    return labels
