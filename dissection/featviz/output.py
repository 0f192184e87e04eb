"""The folder `featviz` writes: one PNG per image and featviz.json, complete or not at all.

OUT/featviz.json (schema 1):
    {"schema": 1, "layer": str, "model": str (architecture or TorchScript file), "weights": str | null,
     "size": int (px, square), "seed": int, "negative": bool,
     "recipe": {"steps", "lr", "decay_power", "init_sd", "diversity", "diversity_weight", "redirect_relu",
                "transforms": {"jitter", "scales", "angles", "jitter_after", "fill"}},
     "mean": [3 floats], "std": [3 floats],
     "best_activations": {"source": "dissection" | "probe-set", "path": str} | null,
     "summary": {"units", "units_with_figures", "median_relative_activation", "share_above_1",
                 "median_selectivity"} (only with best_activations),
     "units": [{"unit": int (1-based, as tally.csv), "channel": int (0-based),
                "best_probe_activation", "relative_activation", "selectivity" (only with best_activations;
                the mean over the unit's positive images; null where undefined)}],
     "images": [{"file": str (relative to OUT), "unit": int, "channel": int,
                 "direction": "positive" | "negative", "index": int (0-based among the unit's diverse images),
                 "activation": {"mean": float, "max": float} (the unit's map, of the 8-bit image as saved),
                 "relative_activation", "selectivity" (only with best_activations; null where undefined)}]}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dissection.errors import DissectionError
from dissection.featviz.check import Check, check
from dissection.featviz.render import Recipe, Visualization

SCHEMA = 1
INDEX = "featviz.json"


def check_out(out: Path) -> None:
    """Refuse an output folder that exists and holds something other than an earlier featviz result."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / INDEX).is_file())):
        raise DissectionError(f"{out} exists and is not a featviz folder; name a new or empty folder")


def image_name(vis: Visualization, row: int, width: int) -> str:
    """unit_0001.png; _neg for the negative direction, _d1 … _dK for diverse images."""
    name = f"unit_{vis.channels[row] + 1:0{width}d}"
    if vis.directions[row] == "negative":
        name += "_neg"
    if max(vis.indices) > 0:
        name += f"_d{vis.indices[row] + 1}"
    return name + ".png"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def document(
    vis: Visualization,
    *,
    model: str,
    weights: str | None = None,
    seed: int,
    recipe: Recipe,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    best: np.ndarray | None = None,
    best_source: dict[str, str] | None = None,
) -> dict[str, Any]:
    """featviz.json (schema above); with `best` (each channel's best probe activation) the check's figures."""
    figures: Check | None = check(vis, best) if best is not None else None
    width = max(4, len(str(vis.layer_max.shape[1])))
    images = []
    for row, channel in enumerate(vis.channels):
        entry: dict[str, Any] = {
            "file": image_name(vis, row, width),
            "unit": channel + 1,
            "channel": channel,
            "direction": vis.directions[row],
            "index": vis.indices[row],
            "activation": {
                "mean": float(vis.mean_activation[row]),
                "max": float(vis.max_activation[row]),
            },
        }
        if figures is not None:
            entry["relative_activation"] = _number(figures.relative[row])
            entry["selectivity"] = _number(figures.selectivity[row])
        images.append(entry)
    units = []
    per_unit = figures.units(vis) if figures is not None else {}
    for channel in dict.fromkeys(vis.channels):
        unit: dict[str, Any] = {"unit": channel + 1, "channel": channel}
        if best is not None:
            relative, selectivity = per_unit[channel]
            unit["best_probe_activation"] = _number(best[channel])
            unit["relative_activation"] = _number(relative)
            unit["selectivity"] = _number(selectivity)
        units.append(unit)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "layer": vis.layer,
        "model": model,
        "weights": weights,
        "size": int(vis.images.shape[-1]),
        "seed": seed,
        "negative": "negative" in vis.directions,
        "recipe": dataclasses.asdict(recipe),
        "mean": list(mean),
        "std": list(std),
        "best_activations": best_source if best is not None else None,
    }
    if figures is not None:
        result["summary"] = figures.summary(vis)
    result["units"] = units
    result["images"] = images
    return result


def write_featviz(vis: Visualization, out: str | Path, featviz: dict[str, Any]) -> Path:
    """Write the PNGs and featviz.json (the `document`) into a hidden sibling folder that replaces `out`
    only when complete, so a failed run leaves nothing that looks finished."""
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        pixels = (vis.images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        for entry, image in zip(featviz["images"], pixels, strict=True):
            Image.fromarray(image, "RGB").save(partial / entry["file"])
        (partial / INDEX).write_text(json.dumps(featviz, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out
