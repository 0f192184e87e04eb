"""Pictures of causal effects: effect against the number of units (matplotlib, Agg canvas, never pyplot),
and before/after grids of samples (Pillow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

_TOP, _CONTROL = "#1f77b4", "#7f7f7f"


def _curve(axes: Axes, curves: list[dict[str, Any]], key: str, color: str, label: str, style: str) -> None:
    points = [(c["units"], c[key]) for c in curves if c[key] is not None]
    if not points:
        return
    n = np.array([p[0] for p in points])
    mean = np.array([p[1]["mean"] for p in points])
    low = np.array([p[1]["low"] for p in points])
    high = np.array([p[1]["high"] for p in points])
    axes.plot(n, mean, style, color=color, label=label, marker="o", markersize=4)
    axes.fill_between(n, low, high, color=color, alpha=0.2, linewidth=0)


def effect_plot(document: dict[str, Any], path: Path) -> Path:
    """effect.png: ablation (drop in the share of c) and insertion (share of the region that becomes c)
    against n, the concept's top-n units beside random sets of n units, 95 % intervals shaded."""
    figure = Figure(figsize=(8.0, 3.2), dpi=110)
    FigureCanvasAgg(figure)
    curves = document["curves"]
    concept = document["concept"]
    panels = (
        ("ablation", f"remove: drop in share of {concept} pixels"),
        ("insertion", f"insert: share of region becoming {concept}"),
    )
    for i, (key, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 2, i)
        _curve(axes, curves, key, _TOP, f"top units by IoU with {concept}", "-")
        _curve(axes, curves, f"{key}_control", _CONTROL, "random units", "--")
        axes.set_xscale("log", base=2)
        axes.set_xticks([c["units"] for c in curves], [str(c["units"]) for c in curves])
        axes.set_xlabel(f"units of {document['layer']}")
        axes.set_title(title, fontsize=9)
        axes.axhline(0.0, color="#bbb", linewidth=0.8)
        if key == "insertion" and all(c["insertion"] is None for c in curves):
            axes.text(
                0.5, 0.5, document["insertion_note"] or "", ha="center", transform=axes.transAxes, fontsize=8
            )
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7, loc="best")
    figure.suptitle(
        f"{concept}: {document['samples']} samples (seed {document['seed']}), "
        f"{document['controls']} random sets per size",
        fontsize=10,
    )
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path


def before_after_grid(
    before: torch.Tensor,
    after: torch.Tensor,
    path: Path,
    *,
    region: list[float] | None = None,
    scale: int = 2,
) -> Path:
    """Two rows of samples (images in [0, 1]): before on top, after below; `region` (fractions) outlined."""
    rows = []
    for images in (before, after):
        pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        rows.append(
            [
                Image.fromarray(p).resize((p.shape[1] * scale, p.shape[0] * scale), Image.Resampling.NEAREST)
                for p in pixels
            ]
        )
    w, h = rows[0][0].size
    gap = 4
    canvas = Image.new("RGB", (len(rows[0]) * (w + gap) - gap, 2 * h + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            x, y = c * (w + gap), r * (h + gap)
            canvas.paste(picture, (x, y))
            if region is not None:
                x0, y0, x1, y1 = region
                draw.rectangle(
                    (x + x0 * w, y + y0 * h, x + x1 * w - 1, y + y1 * h - 1), outline="#ffffff", width=1
                )
    path = Path(path)
    canvas.save(path)
    return path
