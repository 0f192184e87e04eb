"""Transformation robustness: a fresh random jitter, scale and rotation of the image at every step.

Without it the optimizer finds high-frequency patterns that drive the unit only at one exact pixel alignment.
Lucid's standard chain is pad(12, grey), jitter(8), random scale 0.90…1.10, random rotation -10…10 degrees
(0 five times more often), jitter(4). Here the chain is one affine resampling that keeps the image's size:
what moves in from outside the image is the same 0.5 grey as Lucid's padding, and bilinear sampling of values
in [0, 1] and grey stays in [0, 1]. A jitter of d (a random crop d px smaller, as in Lucid) shifts by up to
d/2 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def _lucid_scales() -> tuple[float, ...]:
    return tuple(1 + (i - 5) / 50 for i in range(11))


def _lucid_angles() -> tuple[float, ...]:
    return tuple(float(a) for a in range(-10, 11)) + (0.0,) * 5


@dataclass(frozen=True)
class Transforms:
    """Lucid's standard transforms (jitters in px, scales as factors, angles in degrees), drawn per image."""

    jitter: int = 8
    scales: tuple[float, ...] = field(default_factory=_lucid_scales)
    angles: tuple[float, ...] = field(default_factory=_lucid_angles)
    jitter_after: int = 4
    fill: float = 0.5

    def matrices(self, batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """B x 2 x 3 sampling matrices for `F.affine_grid`: output position → input position."""
        first = _shifts(batch, self.jitter, generator)
        scale = torch.tensor(self.scales, dtype=torch.float64)[
            torch.randint(len(self.scales), (batch,), generator=generator)
        ]
        angle = torch.tensor(self.angles, dtype=torch.float64)[
            torch.randint(len(self.angles), (batch,), generator=generator)
        ]
        second = _shifts(batch, self.jitter_after, generator)
        radians = angle * (math.pi / 180)
        cos, sin = radians.cos(), radians.sin()
        # sampling undoes the chain: p_in = A p_out + b with A = R(-angle) / scale, b = -A·second - first
        linear = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
        linear = linear / scale[:, None, None]
        offset = -(linear @ second[:, :, None])[:, :, 0] - first
        # pixel coordinates (x, y) about the centre → affine_grid's [-1, 1] coordinates
        to_unit = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64)
        theta = torch.cat(
            [linear * to_unit[None, :, None] / to_unit[None, None, :], (offset * to_unit)[:, :, None]], 2
        )
        return theta.float()

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The images, each moved by its own random draw from `generator`; same shape, same range."""
        batch, _, height, width = images.shape
        theta = self.matrices(batch, height, width, generator).to(images)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        moved = F.grid_sample(
            images - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return moved + self.fill


def _shifts(batch: int, jitter: int, generator: torch.Generator) -> torch.Tensor:
    """Integer shifts of a random crop `jitter` px smaller, about the centred crop: -jitter/2 … jitter/2."""
    offsets = torch.randint(jitter + 1, (batch, 2), generator=generator).double()
    return offsets - jitter / 2
