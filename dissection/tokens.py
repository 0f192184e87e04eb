"""Transformer layers as feature maps: the declared rule that turns a layer's tokens into N x C x H x W.

Dissection and Grad-CAM need a map per channel. A vision transformer block outputs tokens, N x (P + H·W) x C
(P prefix tokens: a class token, distillation or register tokens, then the patches in row-major order), and a
swin stage outputs N x H x W x C. The rule (`--tokens`) says how to read the output:

| rule            | the layer outputs           | becomes                                            |
|-----------------|-----------------------------|----------------------------------------------------|
| `none`          | N x C x H x W               | itself; anything else is an error                  |
| `channels-last` | N x H x W x C (swin stages) | permuted to N x C x H x W                          |
| `patches`       | N x (H·W) x C               | the tokens laid out on the H x W grid              |
| `cls`           | N x (1 + H·W) x C           | the first (class) token dropped, the rest gridded  |
| `cls+K`         | N x (1 + K + H·W) x C       | the class and K register tokens dropped            |
| `auto`          | any of these                | inferred, as below                                 |

The grid H x W must be one the input image can produce: a stride s with H = ih/s and W = iw/s (exactly, or
else rounded down or up). `auto` reads a 4-D output as N x C x H x W, unless its last two sizes cannot be such
a grid while sizes 1 and 2 can (then channels-last: 56 x 56 x 96 of a 224 px image); a 3-D output as tokens
with the number of prefix tokens (0 to 16) that leaves an exact grid, else a rounded one, and it refuses to
guess when two readings fit. The prefix tokens are dropped from the map and recorded in the `TokenLayout`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch

from dissection.errors import LayerError

MAX_PREFIX = 16
"""The most class + register tokens `auto` considers (registers come in 4, 8 or 16)."""

RULES = ("auto", "none", "channels-last", "patches", "cls", "cls+K")


@dataclass(frozen=True)
class TokenRule:
    """A parsed `--tokens` value; `prefix` is the number of tokens before the patches (kind `tokens`)."""

    kind: Literal["auto", "none", "channels-last", "tokens"]
    prefix: int = 0

    def __str__(self) -> str:
        if self.kind != "tokens":
            return self.kind
        return "patches" if self.prefix == 0 else "cls" if self.prefix == 1 else f"cls+{self.prefix - 1}"


def parse_rule(text: str | TokenRule) -> TokenRule:
    """`auto`, `none`, `channels-last`, `patches`, `cls` or `cls+K` (K register tokens after the class
    token)."""
    if isinstance(text, TokenRule):
        return text
    if text in ("auto", "none", "channels-last"):
        return TokenRule(text)  # type: ignore[arg-type]
    if text == "patches":
        return TokenRule("tokens", 0)
    match = re.fullmatch(r"cls(?:\+(\d+))?", text)
    if match is None:
        raise LayerError(
            f"--tokens {text!r} is not one of {', '.join(RULES)} (K a number of register tokens)"
        )
    return TokenRule("tokens", 1 + int(match.group(1) or 0))


@dataclass(frozen=True)
class TokenLayout:
    """How one layer's output was read: `kind` nchw (as is), nhwc (permuted) or tokens (`prefix` leading
    tokens dropped, the rest on the `grid`). `shape` is the output's shape without the batch size."""

    layer: str
    kind: Literal["nchw", "nhwc", "tokens"]
    shape: tuple[int, ...]
    grid: tuple[int, int]
    prefix: int = 0

    @property
    def channels(self) -> int:
        return self.shape[0] if self.kind == "nchw" else self.shape[-1]

    def describe(self) -> str:
        """One line for the user, e.g. `N x 197 x 768 tokens -> 768 x 14 x 14, 1 prefix token dropped`."""
        shape = " x ".join(str(size) for size in ("N", *self.shape))
        target = f"{self.channels} x {self.grid[0]} x {self.grid[1]}"
        if self.kind == "nchw":
            return f"{shape} (N x C x H x W)"
        if self.kind == "nhwc":
            return f"{shape} channels-last -> {target}"
        dropped = (
            f", {self.prefix} prefix token{'s' if self.prefix != 1 else ''} dropped" if self.prefix else ""
        )
        return f"{shape} tokens -> {target}{dropped}"

    def as_dict(self) -> dict[str, object]:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "shape": list(self.shape),
            "grid": list(self.grid),
            "prefix_tokens": self.prefix,
            "description": self.describe(),
        }

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        """The output as N x C x H x W (a view where possible)."""
        if self.kind == "nchw":
            return output
        if self.kind == "nhwc":
            return output.permute(0, 3, 1, 2)
        n, channels = output.shape[0], output.shape[-1]
        return output[:, self.prefix :].reshape(n, *self.grid, channels).permute(0, 3, 1, 2)

    def to_output(self, feature_map: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_map`: a map in the layer's own layout, the prefix tokens taken from `output`.
        Grad-CAM hands this to the rest of the network so that the gradient reaches `feature_map`."""
        if self.kind == "nchw":
            return feature_map
        if self.kind == "nhwc":
            return feature_map.permute(0, 2, 3, 1)
        patches = feature_map.flatten(2).transpose(1, 2)
        return torch.cat([output[:, : self.prefix], patches], dim=1) if self.prefix else patches


def _grid_fits(h: int, w: int, input_size: tuple[int, int], *, exact: bool) -> bool:
    """Whether some stride s maps the input to an h x w grid: h = ih/s and w = iw/s, exactly or rounded."""
    ih, iw = input_size
    if h < 1 or w < 1:
        return False
    if exact:
        return ih % h == 0 and iw % w == 0 and ih // h == iw // w
    low, high = max(1, ih // (h + 1)), ih // max(h - 1, 1) + 1
    return any(h in (ih // s, -(-ih // s)) and w in (iw // s, -(-iw // s)) for s in range(low, high + 1))


def _grids(count: int, input_size: tuple[int, int], *, exact: bool) -> list[tuple[int, int]]:
    """Every h x w = count grid the input can produce."""
    found = []
    for h in range(1, math.isqrt(count) + 1):
        if count % h == 0:
            for pair in {(h, count // h), (count // h, h)}:
                if _grid_fits(*pair, input_size, exact=exact):
                    found.append(pair)
    return sorted(found)


def _token_layout(
    layer: str, shape: tuple[int, ...], prefixes: range, input_size: tuple[int, int]
) -> TokenLayout:
    tokens = shape[1]
    for exact in (True, False):
        found = [
            (prefix, grid)
            for prefix in prefixes
            if tokens - prefix > 0
            for grid in _grids(tokens - prefix, input_size, exact=exact)
        ]
        if len(found) == 1:
            ((prefix, grid),) = found
            return TokenLayout(layer, "tokens", shape[1:], grid, prefix)
        if found:
            readings = "; ".join(
                f"{TokenRule('tokens', prefix)} ({grid[0]} x {grid[1]})" for prefix, grid in found
            )
            raise LayerError(
                f"layer {layer!r} outputs tokens {_shape(shape)}; more than one reading fits the "
                f"{input_size[0]} x {input_size[1]} input: {readings}. Name one with --tokens"
            )
    which = "a grid" if len(prefixes) > 1 else f"a grid after {prefixes[0]} prefix token(s)"
    raise LayerError(
        f"layer {layer!r} outputs {_shape(shape)}; cannot reshape it to N x C x H x W: no number of tokens "
        f"leaves {which} that a {input_size[0]} x {input_size[1]} input can produce"
    )


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(size) for size in shape)


def resolve_layout(
    layer: str, shape: tuple[int, ...], rule: TokenRule, input_size: tuple[int, int] | None
) -> TokenLayout:
    """Read `layer`'s output of `shape` (batch first) by `rule`, for images of `input_size` (h, w)."""
    if rule.kind == "none" or (rule.kind == "auto" and len(shape) == 4 and input_size is None):
        if len(shape) != 4:
            raise LayerError(
                f"layer {layer!r} outputs shape {tuple(shape)}; dissection needs N x C x H x W "
                "(for a transformer layer, pass --tokens auto, cls, patches or channels-last)"
            )
        return TokenLayout(layer, "nchw", shape[1:], (shape[2], shape[3]))
    if rule.kind == "channels-last":
        if len(shape) != 4:
            raise LayerError(
                f"layer {layer!r} outputs {_shape(shape)}; --tokens channels-last needs N x H x W x C"
            )
        return TokenLayout(layer, "nhwc", shape[1:], (shape[1], shape[2]))
    if input_size is None:
        raise LayerError(f"layer {layer!r}: reading tokens needs the input image size")
    if rule.kind == "tokens":
        if len(shape) != 3:
            raise LayerError(f"layer {layer!r} outputs {_shape(shape)}; --tokens {rule} needs N x tokens x C")
        return _token_layout(layer, shape, range(rule.prefix, rule.prefix + 1), input_size)
    if len(shape) == 4:
        if _grid_fits(shape[2], shape[3], input_size, exact=False) or not _grid_fits(
            shape[1], shape[2], input_size, exact=False
        ):
            return TokenLayout(layer, "nchw", shape[1:], (shape[2], shape[3]))
        return TokenLayout(layer, "nhwc", shape[1:], (shape[1], shape[2]))
    if len(shape) == 3:
        return _token_layout(layer, shape, range(MAX_PREFIX + 1), input_size)
    raise LayerError(
        f"layer {layer!r} outputs shape {tuple(shape)}; dissection needs N x C x H x W and cannot reshape "
        "this to it (transformer layers may output N x tokens x C or N x H x W x C)"
    )
