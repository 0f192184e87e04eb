"""Drawing maps over images: bilinear upsampling, per-image normalization, JET colour and captions.

The blend follows the original CAM code (`heatmap * 0.3 + image * 0.5`); both weights are parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

HEAT_WEIGHT = 0.3
IMAGE_WEIGHT = 0.5


def upsample(raw: torch.Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    """A raw h x w map resized bilinearly (half-pixel centres) to height x width, as float32."""
    tensor = torch.as_tensor(np.asarray(raw, dtype=np.float32) if isinstance(raw, np.ndarray) else raw)
    tensor = tensor.detach().float().cpu()
    if tensor.dim() != 2:
        raise ValueError(f"a map must be h x w, got shape {tuple(tensor.shape)}")
    resized = F.interpolate(tensor[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()


def normalize(values: np.ndarray) -> np.ndarray:
    """Min → 0, max → 1 per image; a constant map becomes all zeros (it shows nowhere in particular)."""
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def jet(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as JET RGB, uint8 H x W x 3."""
    rgba = matplotlib.colormaps["jet"](np.clip(values, 0.0, 1.0))
    return np.rint(rgba[..., :3] * 255).astype(np.uint8)


def blend(
    image: np.ndarray, heat: np.ndarray, heat_weight: float = HEAT_WEIGHT, image_weight: float = IMAGE_WEIGHT
) -> np.ndarray:
    """heat × heat_weight + image × image_weight, clipped to uint8."""
    mixed = heat.astype(np.float32) * heat_weight + image.astype(np.float32) * image_weight
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def caption(image: Image.Image, lines: Sequence[str], *, highlight: int | None = None) -> Image.Image:
    """Write `lines` in the top-left corner on a dark band; line `highlight` in yellow."""
    out = image.copy()
    if not lines:
        return out
    size = max(10, min(18, out.width // 16))
    font = _font(size)
    draw = ImageDraw.Draw(out, "RGBA")
    pad, step = 3, size + 3
    width = max(draw.textlength(line, font=font) for line in lines)
    draw.rectangle((0, 0, int(width) + 2 * pad, pad + step * len(lines)), fill=(0, 0, 0, 160))
    for i, line in enumerate(lines):
        colour = (255, 230, 0) if i == highlight else (255, 255, 255)
        draw.text((pad, pad + i * step), line, font=font, fill=colour)
    return out


def render_overlay(
    image: Image.Image,
    raw: torch.Tensor | np.ndarray,
    *,
    lines: Sequence[str] = (),
    highlight: int | None = None,
    heat_weight: float = HEAT_WEIGHT,
    image_weight: float = IMAGE_WEIGHT,
    min_side: int = 224,
) -> Image.Image:
    """The map upsampled to the image, normalized, in JET over the image, with a caption.

    Images smaller than `min_side` are enlarged first so the caption stays readable.
    """
    rgb = image.convert("RGB")
    if min(rgb.size) < min_side:
        scale = min_side / min(rgb.size)
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BILINEAR)
    heat = jet(normalize(upsample(raw, rgb.height, rgb.width)))
    return caption(
        Image.fromarray(blend(np.asarray(rgb), heat, heat_weight, image_weight)), lines, highlight=highlight
    )


def side_by_side(panels: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Panels in one row on white."""
    height = max(panel.height for panel in panels)
    width = sum(panel.width for panel in panels) + gap * (len(panels) - 1)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width + gap
    return sheet


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[tuple[tuple[int, int, int, int], tuple[int, int, int]]],
    scale: float = 1.0,
) -> Image.Image:
    """Inclusive pixel boxes (x1, y1, x2, y2) in colour, scaled to an enlarged image."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(1, round(scale))
    for (x1, y1, x2, y2), colour in boxes:
        draw.rectangle(
            (x1 * scale, y1 * scale, (x2 + 1) * scale - 1, (y2 + 1) * scale - 1), outline=colour, width=width
        )
    return out
