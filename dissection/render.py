"""Thumbnails, strips and report.html of a dissected layer, and a unit's full-size tiles on demand.

A tile is a top-activating image with the unit's region highlighted: inside the mask (the activation map
upsampled bilinearly to the image size, > T_k) the image as is, outside at 20 % brightness. The report shows
a strip per unit: its first STRIP_IMAGES tiles as thumbnails side by side, each made by the same rule from the
image scaled to THUMBNAIL_HEIGHT px high (the map upsampled to that size). Full-size tiles are made only when
asked for (`unit_tiles`), from the unit's stored maps (maps.npy, see `dissection.results`), so the cost of a
run does not grow with top-k. report.html is one page with inline CSS and SVG (no scripts, no external
resources) that shows the strips from the layer folder next to it.
"""

from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dissection.broden import ProbeSet
from dissection.concepts import concept_display
from dissection.errors import DissectionError
from dissection.sources import Progress

OUTSIDE_BRIGHTNESS = 0.2
THUMBNAIL_HEIGHT = 96
STRIP_IMAGES = 10
JPEG_QUALITY = 90
_GAP = 4
_UNITS_PER_CHUNK = 64
UNIT_PLACEHOLDER = "{unit}"
"""Where `report_html`'s `unit_href` puts the unit's number (1-based, as in tally.csv)."""
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


def unit_tiles(images: np.ndarray, maps: np.ndarray, threshold: float) -> np.ndarray:
    """A unit's full-size tiles, in rank order: its top images (k x H x W x 3 uint8) highlighted by their maps
    (k x h x w, from maps.npy) at the unit's threshold."""
    return highlight(images, maps, threshold)


def encode_jpeg(pixels: np.ndarray | Image.Image) -> bytes:
    """A tile or strip (pixels or an RGB image) as the JPEG bytes every writer here uses."""
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def thumbnail_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a thumbnail: THUMBNAIL_HEIGHT px high (aspect kept), never larger than the image."""
    height, width = image_size
    if height <= THUMBNAIL_HEIGHT:
        return height, width
    return THUMBNAIL_HEIGHT, max(1, round(width * THUMBNAIL_HEIGHT / height))


def shrink(image: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The image scaled (bilinear, antialiased) to `size` = (height, width); as it is when already that
    size."""
    shrunk = Image.fromarray(image)
    if image.shape[:2] == size:
        return shrunk
    return shrunk.resize((size[1], size[0]), Image.Resampling.BILINEAR)


def _threads() -> int:
    return max(1, os.cpu_count() or 1)


_Thumbnail = tuple[Image.Image, Image.Image]
"""A thumbnail and its dimmed copy (`_DIMMED` applied to every channel)."""


def _thumbnail(image: np.ndarray, size: tuple[int, int]) -> _Thumbnail:
    thumb = shrink(image, size)
    return thumb, thumb.point(_DIMMED.tolist() * 3)


def render_strips(
    document: dict[str, Any],
    probe: ProbeSet,
    layer_dir: Path,
    unit_maps: np.ndarray,
    *,
    progress: Progress | None = None,
) -> None:
    """Write every unit's strip (its first STRIP_IMAGES images as thumbnails) at the paths in `document`.

    `unit_maps` is units x topk x h x w (maps.npy, the units in document order). Each distinct image is
    decoded, scaled and dimmed once, in threads; the masks of a chunk of units are made in one go (maps
    upsampled together, each compared with its unit's T_k as float32, as `highlight` does); each strip is
    pasted together from the thumbnails through its masks and encoded in a thread (no tile array is made).
    Memory grows with units x STRIP_IMAGES masks, not with the number of images.
    """
    units = document["units"]
    size = thumbnail_size(probe.image_size)
    counts = [min(len(unit["images"]), STRIP_IMAGES) for unit in units]
    needed = sorted({entry["index"] for unit in units for entry in unit["images"][:STRIP_IMAGES]})
    (layer_dir / "strips").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(_threads()) as pool:
        thumbs = dict(
            zip(needed, pool.map(lambda i: _thumbnail(probe.load_image(i), size), needed), strict=True)
        )
        writes = []
        for start in range(0, len(units), _UNITS_PER_CHUNK):
            chunk = range(start, min(start + _UNITS_PER_CHUNK, len(units)))
            masks = _strip_masks(
                [unit_maps[u, : counts[u]] for u in chunk],
                [units[u]["threshold"] for u in chunk for _ in range(counts[u])],
                size,
            )
            offset = 0
            for u in chunk:
                if counts[u]:
                    shown = [thumbs[entry["index"]] for entry in units[u]["images"][: counts[u]]]
                    strip = masks[offset : offset + counts[u]]
                    writes.append(pool.submit(_write_strip, shown, strip, layer_dir / units[u]["strip"]))
                offset += counts[u]
            if progress:
                progress(chunk.stop, len(units))
        for write in writes:
            write.result()


def _strip_masks(maps: list[np.ndarray], thresholds: list[float], size: tuple[int, int]) -> np.ndarray:
    """n x height x width bool masks (True inside) of the maps (each k x h x w, n in all) at their
    thresholds, compared as float32."""
    if not thresholds:
        return np.zeros((0, *size), bool)
    up = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(np.concatenate(maps), np.float32)).unsqueeze(1),
        size=size,
        mode="bilinear",
        align_corners=False,
    )[:, 0]
    return (up > torch.tensor(thresholds, dtype=torch.float32)[:, None, None]).numpy()


def strip_image(thumbs: Sequence[_Thumbnail], masks: np.ndarray) -> Image.Image:
    """Tiles side by side on white, _GAP px apart: each thumbnail inside its mask (True), its dimmed copy
    outside. The masks paste as 1-bit images: a full copy where set, as a 255 mask would, at half the cost."""
    height, width = masks.shape[1:]
    canvas = Image.new("RGB", (len(thumbs) * (width + _GAP) - _GAP, height), (255, 255, 255))
    for i, ((thumb, dimmed), mask) in enumerate(zip(thumbs, masks, strict=True)):
        corner = (i * (width + _GAP), 0)
        canvas.paste(dimmed, corner)
        canvas.paste(thumb, corner, Image.fromarray(mask))
    return canvas


def _write_strip(thumbs: Sequence[_Thumbnail], masks: np.ndarray, path: Path) -> None:
    _write_jpeg(strip_image(thumbs, masks), path)


def _write_jpeg(image: Image.Image, path: Path) -> None:
    path.write_bytes(encode_jpeg(image))


def write_unit_tiles(layer_dir: Path, units: Sequence[int] | None = None) -> list[Path]:
    """Make the full-size tiles of `units` (1-based, as tally.csv and report.html number them; None = all)
    in a dissected layer folder, at the paths its result.json names; returns them. Reads the probe set named
    there."""
    from dissection.broden import load_probe_set

    layer_dir = Path(layer_dir)
    document = _read_document(layer_dir)
    maps_path = layer_dir / document.get("maps", "maps.npy")
    if not maps_path.is_file():
        raise DissectionError(f"{maps_path} is missing; re-run the dissection of {layer_dir} to make it")
    unit_maps = np.load(maps_path, mmap_mode="r")
    probe = load_probe_set(document["probe_set"])
    written = []
    for number in range(1, document["num_units"] + 1) if units is None else units:
        if not 1 <= number <= document["num_units"]:
            raise DissectionError(f"{layer_dir}: unit {number} is not one of units 1-{document['num_units']}")
        unit = document["units"][number - 1]
        entries = unit["images"]
        if not entries:
            continue
        images = np.stack([probe.load_image(entry["index"]) for entry in entries])
        tiles = unit_tiles(images, np.array(unit_maps[number - 1, : len(entries)]), unit["threshold"])
        for entry, tile in zip(entries, tiles, strict=True):
            path = layer_dir / entry["tile"]
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            partial.write_bytes(encode_jpeg(tile))
            partial.replace(path)
            written.append(path)
    return written


def _read_document(layer_dir: Path) -> dict[str, Any]:
    source = layer_dir / "result.json"
    if not source.is_file():
        raise DissectionError(f"{source} is missing; is {layer_dir} a dissected layer folder?")
    document: dict[str, Any] = json.loads(source.read_text())
    return document


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
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{_label(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{bar_h - 5}" fill="{color}">'
            f"<title>{_label(label)}: {count}</title></rect>"
            f'<text x="{label_w + w + 4}" y="{y + 13}">{count}</text>'
        )
    height = bar_h * len(per_concept)
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="detectors per concept">{"".join(rows)}</svg>'
    )


def _label(label: str) -> str:
    """A concept label as the report shows it: escaped, without Broden's suffix."""
    return html.escape(concept_display(label))


def _featviz_figure(featviz: dict[str, Any], href: str, channel: int, unit: int) -> str:
    """A unit's feature visualizations (images optimized to drive it) and its relative activation."""
    files = sorted(
        (i for i in featviz.get("images", []) if i["channel"] == channel and i["direction"] == "positive"),
        key=lambda i: i["index"],
    )
    if not files:
        return ""
    entry: dict[str, Any] = next((u for u in featviz.get("units", []) if u["channel"] == channel), {})
    relative = entry.get("relative_activation")
    caption = "optimized to drive the unit"
    if relative is not None:
        caption += f" · {relative:.2f}× its best probe image"
    images = "".join(
        f'<img src="{html.escape(href + i["file"])}" alt="feature visualization {i["index"] + 1} of unit '
        f'{unit}" width="{THUMBNAIL_HEIGHT}" height="{THUMBNAIL_HEIGHT}" loading="lazy">'
        for i in files
    )
    return f'<figure class="featviz">{images}<figcaption>{caption}</figcaption></figure>'


def report_html(
    document: dict[str, Any],
    *,
    featviz: dict[str, Any] | None = None,
    featviz_href: str = "",
    unit_href: str = "",
) -> str:
    """The report page for a result.json document; with `featviz` (a featviz.json whose files lie at
    `featviz_href`, relative to the report) each unit's feature visualizations beside its strip. With
    `unit_href` (an address holding `UNIT_PLACEHOLDER`, as the service passes its unit pages) each unit's
    heading links there, the placeholder replaced by the unit's number."""
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

    def figure(unit: dict[str, Any]) -> str:
        return _featviz_figure(featviz, featviz_href, unit["channel"], unit["unit"]) if featviz else ""

    cards = []
    for unit in ordered:
        color = CATEGORY_COLORS.get(unit["category"], "#777")
        others = ", ".join(f"{_label(c['label'])} {c['iou']:.3f}" for c in unit["concepts"][1:])
        name = f"unit {unit['unit']}"
        if unit_href:
            href = unit_href.replace(UNIT_PLACEHOLDER, str(unit["unit"]))
            name = f'<a href="{html.escape(href)}">{name}</a>'
        cards.append(
            f'<section class="unit{"" if unit["interpretable"] else " dim"}">'
            f'<h3>{name} <b style="color:{color}">{_label(unit["label"])}</b> '
            f"<small>channel {unit['channel']} · {html.escape(unit['category'])} · "
            f"IoU {unit['iou']:.3f}</small></h3>"
            f'<div class="row"><img src="{html.escape(unit["strip"])}" '
            f'alt="top images of unit {unit["unit"]}" loading="lazy">{figure(unit)}</div>'
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
<link rel="icon" href="data:,">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 24px 0 8px; }}
.meta {{ color: #666; margin: 0 0 12px; }}
.chart text {{ font: 12px system-ui, sans-serif; fill: #222; }}
.key {{ margin-right: 14px; }} .key i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
.unit {{ margin: 0 0 14px; }} .unit h3 {{ font-size: 14px; font-weight: normal; margin: 0 0 4px; }}
.unit small {{ color: #666; }} .unit img {{ display: block; max-width: 100%; image-rendering: auto; }}
.also {{ color: #888; font-size: 12px; margin: 2px 0 0; }} .dim {{ opacity: .55; }}
.row {{ display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }}
.featviz {{ margin: 0; }} .featviz img {{ margin-right: 2px; }} .featviz figcaption {{ color: #666; font-size: 12px; }}
</style></head><body>
<h1>{headline}</h1>
<p class="meta">layer {html.escape(document["layer"])} · {document["num_images"]} probe images ·
semantics {html.escape(document["semantics"])} · top {document["topk"]} images per unit, the first
{min(document["topk"], STRIP_IMAGES)} shown</p>
<h2>Detectors per concept</h2><p>{legend}</p>
{_bar_chart(summary["per_concept"], concept_category)}
<h2>Units by IoU</h2>
{"".join(cards)}
</body></html>
"""  # noqa: E501 - the page's CSS lines are part of its output


def write_report(layer_dir: Path, featviz_dir: Path | None = None, *, unit_href: str = "") -> Path:
    """(Re)build `layer_dir`/report.html from its result.json; with `featviz_dir` (a `featviz` output folder
    of the same layer) the units' feature visualizations beside their strips; `unit_href` as
    `report_html`'s."""
    layer_dir = Path(layer_dir)
    document = _read_document(layer_dir)
    featviz, href = None, ""
    if featviz_dir is not None:
        featviz = _read_featviz(Path(featviz_dir), document["layer"])
        href = Path(os.path.relpath(Path(featviz_dir).resolve(), layer_dir.resolve())).as_posix() + "/"
    target = layer_dir / "report.html"
    partial = layer_dir / ".report.html.partial"
    page = report_html(document, featviz=featviz, featviz_href=href, unit_href=unit_href)
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return target


def _read_featviz(folder: Path, layer: str) -> dict[str, Any]:
    """A `featviz` output folder's featviz.json, checked to be of `layer`."""
    source = folder / "featviz.json"
    try:
        featviz: dict[str, Any] = json.loads(source.read_text())
    except (OSError, ValueError) as error:
        raise DissectionError(f"{source}: not a readable featviz.json ({error})") from None
    if featviz.get("layer") != layer:
        raise DissectionError(f"{source} visualizes layer {featviz.get('layer')!r}, not {layer!r}")
    return featviz
