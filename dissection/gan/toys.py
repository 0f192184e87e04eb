"""The toy generator and toy segmenter: small enough to train on two CPU cores in minutes.

`ToyGenerator` is a conditional decoder, not a GAN: its latent (11 standard normal numbers) is mapped,
without weights, to the parameters of a synthetic scene exactly as `dissection.synth` draws them (each
number through the normal CDF to a uniform, then to a class or a range), and a spatial-broadcast decoder
learns to render those parameters as the picture `synth` draws (an L1 regression). An adversarial game from
noise needs many thousand steps of two networks to converge; a regression onto a function of the input
converges in minutes and its samples stay sharp, and the units of its middle layers still have to learn to
draw objects and materials, which is what generator dissection looks for.

`ToySegmenter` is a small fully convolutional network that labels each pixel with one class of
`SEGMENTER_CLASSES`: nothing, an object of the synthetic set, or its floor material.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dissection.synth import _BACKGROUND_COLORS, _OBJECT_COLORS, MATERIALS, OBJECTS, TEXTURES, _Scene

LATENT_DIM = 11
"""Latent coordinates in order: object, background colour, object colour, texture, texture period, texture
phase, floor material, floor height, object size, object x, object y."""

SEGMENTER_CLASSES: tuple[tuple[str, str | None], ...] = (
    ("nothing", None),
    *((name, "object") for name in OBJECTS),
    *((name, "material") for name in MATERIALS),
)
"""(name, category) of the toy segmenter's output channels; the first is not a concept."""

_GROUPS = (
    ("object", len(OBJECTS)),
    ("background", len(_BACKGROUND_COLORS)),
    ("primary", len(_OBJECT_COLORS)),
    ("texture", len(TEXTURES) + 1),  # the last: no texture
    ("period", 1),
    ("phase", 1),
    ("material", len(MATERIALS) + 1),  # the last: no floor
    ("floor", 1),
    ("size", 1),
    ("x", 1),
    ("y", 1),
)
CODE_DIM = sum(width for _, width in _GROUPS)
_PRESENT = 0.75  # synth: a background has a texture, and an image a floor, with this probability


def _slices() -> dict[str, slice]:
    out, start = {}, 0
    for name, width in _GROUPS:
        out[name] = slice(start, start + width)
        start += width
    return out


SLICES = _slices()


def _allowed_primaries() -> tuple[torch.Tensor, torch.Tensor]:
    """Per background colour, the object colours synth may pick (padded with -1) and how many there are."""
    table = torch.full((len(_BACKGROUND_COLORS), len(_OBJECT_COLORS)), -1, dtype=torch.int64)
    counts = torch.zeros(len(_BACKGROUND_COLORS), dtype=torch.int64)
    for b, background in enumerate(_BACKGROUND_COLORS):
        allowed = [i for i, colour in enumerate(_OBJECT_COLORS) if colour != background]
        table[b, : len(allowed)] = torch.tensor(allowed)
        counts[b] = len(allowed)
    return table, counts


class ScenePrior(nn.Module):
    """Latent (N x 11, standard normal) → scene code (N x CODE_DIM): one-hot classes and numbers in [0, 1],
    distributed as `synth` draws its scenes. Has no weights."""

    primary_table: torch.Tensor
    primary_counts: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        table, counts = _allowed_primaries()
        self.register_buffer("primary_table", table, persistent=False)
        self.register_buffer("primary_counts", counts, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = (0.5 * (1.0 + torch.erf(z.flatten(1).float() / math.sqrt(2.0)))).clamp(0.0, 1.0 - 1e-6)

        def pick(column: int, k: int) -> torch.Tensor:
            return (u[:, column] * k).long()

        def optional(column: int, k: int) -> torch.Tensor:
            """Class index, or k (none) with probability 1 - _PRESENT."""
            scaled = u[:, column] / _PRESENT
            return torch.where(scaled < 1.0, (scaled * k).long().clamp(max=k - 1), k)

        obj = pick(0, len(OBJECTS))
        background = pick(1, len(_BACKGROUND_COLORS))
        counts = self.primary_counts[background]
        primary = self.primary_table[background, (u[:, 2] * counts).long()]
        texture = optional(3, len(TEXTURES))
        material = optional(6, len(MATERIALS))
        has_floor = material < len(MATERIALS)
        floor = torch.where(has_floor, 0.62 + 0.23 * u[:, 7], torch.ones_like(u[:, 7]))
        size = 0.12 + 0.18 * u[:, 8]
        parts = [
            F.one_hot(obj, len(OBJECTS)),
            F.one_hot(background, len(_BACKGROUND_COLORS)),
            F.one_hot(primary, len(_OBJECT_COLORS)),
            F.one_hot(texture, len(TEXTURES) + 1),
            ((u[:, 4] * 0.07 + 0.07) / 0.14)[:, None],
            u[:, 5, None],
            F.one_hot(material, len(MATERIALS) + 1),
            floor[:, None],
            size[:, None],
            (size + (1 - 2 * size) * u[:, 9])[:, None],
            (size + (1 - 2 * size) * u[:, 10])[:, None],
        ]
        return torch.cat([part.float() for part in parts], 1)


def scene_of_code(code: np.ndarray) -> _Scene:
    """The synth scene a code row describes (for rendering the decoder's training targets)."""

    def index(name: str) -> int:
        return int(np.argmax(code[SLICES[name]]))

    texture, material = index("texture"), index("material")
    return _Scene(
        background=_BACKGROUND_COLORS[index("background")],
        texture=TEXTURES[texture] if texture < len(TEXTURES) else None,
        period=float(code[SLICES["period"]][0]) * 0.14,
        phase=float(code[SLICES["phase"]][0]),
        material=MATERIALS[material] if material < len(MATERIALS) else None,
        floor=float(code[SLICES["floor"]][0]),
        kind=OBJECTS[index("object")],
        primary=_OBJECT_COLORS[index("primary")],
        cx=float(code[SLICES["x"]][0]),
        cy=float(code[SLICES["y"]][0]),
        s=float(code[SLICES["size"]][0]),
    )


class SceneBroadcast(nn.Module):
    """Scene code (N x CODE_DIM) → N x (CODE_DIM + RELATIVE) x g x g: the code at every cell of a g x g grid,
    with the cell's coordinates, its offset (dx, dy) from the object's centre in object sizes, their squares
    and |dx|, and its height above the floor line (a spatial-broadcast decoder's input). Has no weights."""

    coords: torch.Tensor

    def __init__(self, grid: int) -> None:
        super().__init__()
        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("coords", torch.stack([x, y])[None], persistent=False)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        n = int(code.shape[0])
        grid = int(self.coords.shape[-1])
        x, y = self.coords[:, 0], self.coords[:, 1]

        def column(name: str) -> torch.Tensor:
            return code[:, SLICES[name].start, None, None]

        size = column("size")
        dx, dy = (x - column("x")) / size, (y - column("y")) / size
        relative = torch.stack([dx, dy, dx * dx, dy * dy, dx.abs(), (y - column("floor")) * 4.0], 1)
        tiled = code[:, :, None, None].expand(n, code.shape[1], grid, grid)
        return torch.cat([tiled, self.coords.expand(n, -1, -1, -1), relative], 1)


RELATIVE = 8  # the coordinates and the six scene-relative features SceneBroadcast adds


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class ToyGenerator(nn.Module):
    """Latent (N x 11) → N x 3 x size x size image in [-1, 1]. Layers to dissect: `layer1` (a per-pixel
    network at size/2 that draws the shapes, 2 x width units), `layer2` (3 x 3 convolutions at size/2, width
    units), `layer3` (size, width/2 units)."""

    def __init__(self, width: int = 24, size: int = 64) -> None:
        super().__init__()
        if size % 2:
            raise ValueError(f"the toy generator's size must be even, not {size}")
        self.prior = ScenePrior()
        self.broadcast = SceneBroadcast(size // 2)
        self.layer1 = nn.Sequential(
            nn.Conv2d(CODE_DIM + RELATIVE, 2 * width, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 1),
            nn.ReLU(inplace=True),
        )
        self.layer2 = _block(2 * width, width)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.layer3 = _block(width, width // 2)
        self.to_rgb = nn.Sequential(nn.Conv2d(width // 2, 3, 3, padding=1), nn.Tanh())

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.broadcast(code)))
        return self.to_rgb(self.layer3(self.up(x)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(self.prior(z))


class ToySegmenter(nn.Module):
    """N x 3 x H x W (normalized) → N x classes x H/2 x W/2 logits: features at 1/4 resolution with dilated
    convolutions (receptive field about 70 px, as large as the synthetic objects), and a skip from 1/2
    resolution for their edges."""

    def __init__(self, classes: int = len(SEGMENTER_CLASSES), width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _block(3, width),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.context = nn.Sequential(
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            *(
                layer
                for dilation in (1, 2, 4)
                for layer in (
                    nn.Conv2d(4 * width, 4 * width, 3, padding=dilation, dilation=dilation),
                    nn.ReLU(inplace=True),
                )
            ),
        )
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.classifier = nn.Sequential(_block(6 * width, 2 * width), nn.Conv2d(2 * width, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edges = self.stem(x)
        return self.classifier(torch.cat([edges, self.up(self.context(edges))], 1))
