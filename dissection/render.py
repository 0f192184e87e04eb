"""Tiles, strips and report.html of a dissected layer.

A tile is a top-activating image with the unit's region highlighted: inside the mask (the activation map
upsampled bilinearly to the image size, > T_k) the image as is, outside at 20 % brightness. A unit's strip is
its tiles side by side. report.html is one page with inline CSS and SVG (no scripts, no external resources)
that shows the strips from the layer folder next to it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dissection.broden import ProbeSet
from dissection.errors import DissectionError
from dissection.sources import Progress

OUTSIDE_BRIGHTNESS = 0.2
STRIP_HEIGHT = 112
_GAP = 4
_UNITS_PER_CHUNK = 32
CATEGORY_COLORS = {
    "color": "#d62728",
    "object": "#1f77b4",
    "part": "#2ca02c",
    "material": "#9467bd",
    "scene": "#ff7f0e",
    "texture": "#8c564b",
}


_DIMMED = np.rint(np.arange(256) * OUTSIDE_BRIGHTNESS).astype(np.uint8)


def highlight(images: np.ndarray, maps: np.ndarray, threshold: float) -> np.ndarray:
    """Tiles (n x H x W x 3 uint8) for images (n x H x W x 3 uint8) and their maps (n x h x w)."""
    up = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(maps, np.float32)).unsqueeze(1),
        size=images.shape[1:3],
        mode="bilinear",
        align_corners=False,
    )[:, 0]
    inside = (up > threshold).numpy()[..., None]
    return np.where(inside, images, _DIMMED[images])


def strip(tiles: np.ndarray) -> Image.Image:
    """Tiles side by side on white, scaled to at most STRIP_HEIGHT px high (an integer reduction when the
    tile height is a multiple of it)."""
    n, height, width = tiles.shape[:3]
    factor = height / STRIP_HEIGHT
    images = [Image.fromarray(tile) for tile in tiles]
    if factor > 1 and factor.is_integer() and width % int(factor) == 0:
        images = [image.reduce(int(factor)) for image in images]
    elif factor > 1:
        size = (max(1, round(width / factor)), STRIP_HEIGHT)
        images = [image.resize(size, Image.Resampling.BILINEAR) for image in images]
    w, h = images[0].size
    canvas = Image.new("RGB", (n * w + (n - 1) * _GAP, h), "white")
    for i, image in enumerate(images):
        canvas.paste(image, (i * (w + _GAP), 0))
    return canvas


def render_tiles(
    document: dict[str, Any],
    probe: ProbeSet,
    layer_dir: Path,
    maps: Callable[[np.ndarray], np.ndarray],
    *,
    progress: Progress | None = None,
) -> None:
    """Write every unit's tiles and strip at the paths named in `document` (result.json), a chunk of units
    at a time so that memory stays bounded; each image is decoded once per chunk."""
    units = document["units"]
    for start in range(0, len(units), _UNITS_PER_CHUNK):
        chunk = units[start : start + _UNITS_PER_CHUNK]
        needed = np.unique([entry["index"] for unit in chunk for entry in unit["images"]]).astype(np.int64)
        if needed.size:
            chunk_maps = maps(needed)
            position = {int(index): i for i, index in enumerate(needed)}
            pixels = {int(index): probe.load_image(int(index)) for index in needed}
        for unit in chunk:
            rows = [position[entry["index"]] for entry in unit["images"]]
            if not rows:
                continue
            images = np.stack([pixels[entry["index"]] for entry in unit["images"]])
            tiles = highlight(images, chunk_maps[rows, unit["channel"]], unit["threshold"])
            for entry, tile in zip(unit["images"], tiles, strict=True):
                path = layer_dir / entry["tile"]
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(tile).save(path, quality=90)
            strip_path = layer_dir / unit["strip"]
            strip_path.parent.mkdir(parents=True, exist_ok=True)
            strip(tiles).save(strip_path, quality=90)
        if progress:
            progress(start + len(chunk), len(units))


def _bar_chart(per_concept: dict[str, int], concept_category: dict[str, str]) -> str:
    if not per_concept:
        return "<p>No unit is interpretable at this IoU threshold.</p>"
    bar_h, label_w, width = 18, 140, 640
    top = max(per_concept.values())
    rows = []
    for i, (label, count) in enumerate(per_concept.items()):
        y = i * bar_h
        w = max(2, round((width - label_w - 40) * count / top))
        color = CATEGORY_COLORS.get(concept_category.get(label, ""), "#777")
        rows.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{bar_h - 5}" fill="{color}">'
            f"<title>{html.escape(label)}: {count}</title></rect>"
            f'<text x="{label_w + w + 4}" y="{y + 13}">{count}</text>'
        )
    height = bar_h * len(per_concept)
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="detectors per concept">{"".join(rows)}</svg>'
    )


def report_html(document: dict[str, Any]) -> str:
    """The report page for a result.json document."""
    summary = document["summary"]
    threshold = document["iou_threshold"]
    concept_category = {u["label"]: u["category"] for u in document["units"] if u["interpretable"]}
    legend = "".join(
        f'<span class="key"><i style="background:{color}"></i>{html.escape(cat)} '
        f"({summary['per_category'].get(cat, 0)})</span>"
        for cat, color in CATEGORY_COLORS.items()
        if cat in document["categories"]
    )
    ordered = sorted(document["units"], key=lambda u: (-u["iou"], u["unit"]))
    cards = []
    for unit in ordered:
        color = CATEGORY_COLORS.get(unit["category"], "#777")
        others = ", ".join(f"{html.escape(c['label'])} {c['iou']:.3f}" for c in unit["concepts"][1:])
        cards.append(
            f'<section class="unit{"" if unit["interpretable"] else " dim"}">'
            f'<h3>unit {unit["unit"]} <b style="color:{color}">{html.escape(unit["label"])}</b> '
            f"<small>{html.escape(unit['category'])} · IoU {unit['iou']:.3f}</small></h3>"
            f'<img src="{html.escape(unit["strip"])}" alt="top images of unit {unit["unit"]}" loading="lazy">'
            f'<p class="also">also: {others}</p></section>'
        )
    title = f"{html.escape(document['layer'])}: network dissection"
    headline = (
        f"{summary['interpretable']}/{document['num_units']} units covering "
        f"{summary['unique_concepts']} concepts with IoU &gt; {threshold:g}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 24px 0 8px; }}
.meta {{ color: #666; margin: 0 0 12px; }}
.chart text {{ font: 12px system-ui, sans-serif; fill: #222; }}
.key {{ margin-right: 14px; }} .key i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
.unit {{ margin: 0 0 14px; }} .unit h3 {{ font-size: 14px; font-weight: normal; margin: 0 0 4px; }}
.unit small {{ color: #666; }} .unit img {{ display: block; max-width: 100%; image-rendering: auto; }}
.also {{ color: #888; font-size: 12px; margin: 2px 0 0; }} .dim {{ opacity: .55; }}
</style></head><body>
<h1>{headline}</h1>
<p class="meta">layer {html.escape(document["layer"])} · {document["num_images"]} probe images ·
semantics {html.escape(document["semantics"])} · top {document["topk"]} images per unit</p>
<h2>Detectors per concept</h2><p>{legend}</p>
{_bar_chart(summary["per_concept"], concept_category)}
<h2>Units by IoU</h2>
{"".join(cards)}
</body></html>
"""  # noqa: E501 - the page's CSS lines are part of its output


def write_report(layer_dir: Path) -> Path:
    """(Re)build `layer_dir`/report.html from its result.json."""
    layer_dir = Path(layer_dir)
    source = layer_dir / "result.json"
    if not source.is_file():
        raise DissectionError(f"{source} is missing; is {layer_dir} a dissected layer folder?")
    document = json.loads(source.read_text())
    target = layer_dir / "report.html"
    partial = layer_dir / ".report.html.partial"
    partial.write_text(report_html(document), encoding="utf-8")
    partial.replace(target)
    return target
