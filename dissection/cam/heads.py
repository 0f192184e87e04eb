"""Finding a model's global-average-pooling + linear head by tracing one forward pass, not by its name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dissection.errors import LayerError, ModelError
from dissection.hooks import resolve_layer

_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


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


class _Trace:
    """Outputs of one forward pass: every 4-D output's shape, the values of those a linear layer could
    pool."""

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

    def hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        """A forward hook that records the module under `name`."""

        def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self.record(name, module, inputs, output)

        return record


@contextmanager
def _traced(model: nn.Module) -> Iterator[_Trace]:
    trace = _Trace({m.in_features for m in model.modules() if isinstance(m, nn.Linear)})
    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(trace.hook(name)))
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


def check_hookable(model: nn.Module) -> None:
    """CAM and Grad-CAM read layers through forward hooks, which TorchScript models never call."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError(
            "CAM needs forward hooks, which TorchScript models do not run; load the eager model instead"
        )


def device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def inspect_model(model: nn.Module, example: torch.Tensor) -> ModelInspection:
    """Trace one forward pass of `example` (one image is enough) to find the GAP + linear head.

    The head's linear layer is the last Linear to run, its output must be the model's output, and its input
    the spatial mean of a feature map with more than one position (or of its relu). Of modules that return
    the same tensor, the outermost (last to finish) is named, e.g. `layer4` rather than `layer4.1`.
    """
    check_hookable(model)
    with torch.no_grad(), _traced(model) as trace:
        output = model(example.to(device_of(model)))
    candidates = sorted(
        ((step, name, shape, module) for name, (step, shape, module) in trace.maps.items()),
        key=lambda candidate: (candidate[0], candidate[1]),
        reverse=True,
    )
    spatial = [(name, shape, module) for _, name, shape, module in candidates if shape[2] * shape[3] > 1]
    last_feature = next((name for name, _, module in spatial if not isinstance(module, _POOLS)), None)
    if not trace.maps:
        return ModelInspection(None, "no layer outputs an N x C x H x W feature map", None)
    if last_feature is None:
        reason = f"every feature map is 1 x 1 at input size {tuple(example.shape[2:])}; use larger images"
        return ModelInspection(None, reason, None)
    if trace.linear is None:
        return ModelInspection(None, "it has no linear layer", last_feature)
    linear_name, linear_in, linear_out = trace.linear
    same_output = (
        isinstance(output, torch.Tensor)
        and output.shape == linear_out.shape
        and torch.equal(output, linear_out)
    )
    if not same_output:
        return ModelInspection(
            None, f"its output is not the output of its last linear layer {linear_name!r}", last_feature
        )
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
        f"the input of its last linear layer {linear_name!r} ({width} features) is not the spatial mean of "
        "any feature map",
        last_feature,
    )


def detect_gap_head(model: nn.Module, example: torch.Tensor) -> GapHead:
    """The GAP + linear head, or a ModelError saying why there is none and pointing to Grad-CAM."""
    found = inspect_model(model, example)
    if found.head is None:
        raise ModelError(
            f"{type(model).__name__} has no global-average-pooling + linear head ({found.no_head_reason}), "
            "so CAM does not apply; use --method gradcam"
        )
    return found.head


def head_parameters(model: nn.Module, head: GapHead) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's weight (classes x units) and bias (zeros when the linear layer has none)."""
    linear = resolve_layer(model, head.linear_layer)
    if not isinstance(linear, nn.Linear):
        raise LayerError(f"layer {head.linear_layer!r} is a {type(linear).__name__}, not a linear layer")
    weight = linear.weight.detach()
    if linear.bias is None:
        return weight, torch.zeros(weight.shape[0], device=weight.device)
    return weight, linear.bias.detach()
