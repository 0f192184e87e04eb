"""Forward hooks as context managers that always remove themselves (also when the forward raises)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from dissection.errors import LayerError
from dissection.tokens import TokenLayout, TokenRule, resolve_layout

OUTPUT = "output"
"""The model's own output as a layer: what a TorchScript model offers, since it runs no forward hooks (trace
the network up to the layer to dissect)."""


def layer_names(model: nn.Module) -> list[str]:
    """Every hookable layer name of `model`, as `named_modules()` gives them (the root excluded); a
    TorchScript model has one, its output."""
    if _scripted(model):
        return [OUTPUT]
    return [name for name, _ in model.named_modules() if name]


def with_output_layer(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """`model`, wrapped so that its output is a hookable layer named OUTPUT when `names` asks for it and the
    model has no module of that name (a TorchScript model never has: its modules cannot be hooked)."""
    if OUTPUT not in names or (OUTPUT in dict(model.named_modules()) and not _scripted(model)):
        return model
    return nn.Sequential(OrderedDict([("model", model), (OUTPUT, nn.Identity())]))


def _scripted(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if not name or name not in modules:
        valid = layer_names(model)
        shown = ", ".join(valid[:60]) + (f", … ({len(valid)} in all)" if len(valid) > 60 else "")
        raise LayerError(f"unknown layer {name!r}; valid layers: {shown}")
    parts = name.split(".")
    if any(_scripted(modules[".".join(parts[:end])]) for end in range(len(parts) + 1)):
        raise LayerError(
            f"layer {name!r}: a TorchScript model runs no forward hooks; trace the network up to that layer "
            f"and pass --layer {OUTPUT}"
        )
    return modules[name]


@contextmanager
def capture_outputs(
    model: nn.Module,
    names: Sequence[str],
    *,
    require_4d: bool = True,
    tokens: TokenRule | None = None,
    input_size: tuple[int, int] | None = None,
    layouts: dict[str, TokenLayout] | None = None,
    detach: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of each named layer on every forward inside the block.

    The dict is overwritten by each forward. Outputs are detached unless `detach=False` (feature
    visualization differentiates through them); a clone is taken so that an in-place
    activation that follows the layer (densenet's final ReLU, `inplace=True` ReLUs) cannot change them.
    With a `tokens` rule each output is read as N x C x H x W by it (`dissection.tokens`; `input_size` is
    the model input's h, w) and the reading goes to `layouts`.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            module = resolve_layer(model, name)

            def hook(_module: nn.Module, _inputs: object, output: object, name: str = name) -> None:
                if not isinstance(output, torch.Tensor):
                    raise LayerError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
                if tokens is not None:
                    layout = resolve_layout(name, tuple(output.shape), tokens, input_size)
                    if layouts is not None:
                        layouts[name] = layout
                    output = layout.to_map(output)
                elif require_4d and output.dim() != 4:
                    raise LayerError(
                        f"layer {name!r} outputs shape {tuple(output.shape)}; dissection needs N x C x H x W"
                    )
                captured[name] = (output.detach() if detach else output).clone(
                    memory_format=torch.contiguous_format
                )

            handles.append(module.register_forward_hook(hook))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def token_layers(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> dict[str, str]:
    """The layers whose output the `auto` rule reads as tokens or channels-last (transformer blocks, swin
    stages), from one forward pass on a blank image of `input_size`: name -> "<rule> · <reading>", the rule
    to give for it and `TokenLayout.describe` (or, when `auto` cannot decide, what it says). A TorchScript
    model, which runs no hooks, has none."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    try:
        for name, module in model.named_modules():
            if not name:
                continue

            def hook(_module: nn.Module, _inputs: object, output: object, name: str = name) -> None:
                if isinstance(output, torch.Tensor):
                    shapes.setdefault(name, tuple(output.shape))

            handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *input_size))
    finally:
        for handle in handles:
            handle.remove()
    found = {}
    for name, shape in shapes.items():
        if len(shape) not in (3, 4):
            continue
        try:
            layout = resolve_layout(name, shape, TokenRule("auto"), input_size)
        except LayerError as error:
            found[name] = f"give a rule · {error}"
            continue
        if layout.kind == "nhwc":
            found[name] = f"channels-last · {layout.describe()}"
        elif layout.kind == "tokens":
            found[name] = f"{TokenRule('tokens', layout.prefix)} · {layout.describe()}"
    return found
