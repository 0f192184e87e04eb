"""From the merged states to labelled units, and the folder that shows them.

OUT/<layer>/result.json (schema 1):
    {"schema": 1, "layer": str, "semantics": "paper"|"netdissect-lite", "probe_set": str (absolute path),
     "num_images": int, "num_units": int, "topk": int, "iou_threshold": float, "categories": [str, ...],
     "summary": {"interpretable": int, "unique_concepts": int,
                 "per_category": {category: interpretable units},
                 "per_concept": {label: interpretable units}},
     "units": [{"unit": int (1-based, as tally.csv), "channel": int (0-based channel of the layer output),
                "threshold": float, "label": str, "category": str, "iou": float, "interpretable": bool,
                "concepts": [{"label": str, "category": str, "iou": float}] (top 5 by IoU),
                "strip": str (path relative to the layer folder),
                "images": [{"image": str (path relative to the probe set's images/ folder, as in index.csv),
                            "index": int (0-based row of index.csv), "activation": float (max over the map),
                            "tile": str (path relative to the layer folder)}] (ranked, at most topk)}],
     "maps": "maps.npy"}
    `units` is in channel order. tally.csv holds NetDissect-Lite's columns, rows sorted by score.

OUT/<layer>/maps.npy: float32 units x topk x h x w, each unit's activation maps of its ranked images (zeros
past its last image): what a full-size tile needs besides the image, so tiles are made on demand
(`dissection.render.write_unit_tiles`, `python -m dissection tiles`) and a `tile` path holds a file only once
made. The strips (`render.render_strips`) are written with the folder.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dissection.broden import ProbeSet
from dissection.concepts import concept_display
from dissection.errors import DissectionError
from dissection.render import render_strips, write_report
from dissection.sources import Progress
from dissection.states import ScanState, TallyState

SCHEMA = 1
MAPS = "maps.npy"
_IMAGES_PER_READ = 64


@dataclass(frozen=True)
class Concept:
    label: str
    category: str
    iou: float


@dataclass(frozen=True)
class UnitResult:
    channel: int
    threshold: float
    label: str
    category: str
    iou: float
    interpretable: bool
    concepts: tuple[Concept, ...]
    images: tuple[tuple[int, float], ...]  # (image index, max activation), ranked
    per_category: tuple[tuple[int, int, int, int, float], ...]  # per category: label number, G, A, I, IoU


@dataclass(frozen=True)
class LayerResult:
    layer: str
    semantics: str
    iou_threshold: float
    topk: int
    iou: np.ndarray  # channels x labels
    units: tuple[UnitResult, ...]  # in channel order


def iou_matrix(probe: ProbeSet, state: TallyState) -> np.ndarray:
    """IoU[k,c] = I / (A[k, cat(c)] + G[c] - I), 0 where the denominator is 0 (unused label numbers: 0)."""
    cats = probe.label_category
    known = cats >= 0
    area = np.zeros_like(state.intersect)
    area[:, known] = state.activation[:, cats[known]]
    denominator = area + state.truth[None, :] - state.intersect
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denominator > 0, state.intersect / np.maximum(denominator, 1), 0.0)
    iou[:, ~known] = 0.0
    return iou


def finalize(
    probe: ProbeSet,
    scan_state: ScanState,
    tally_state: TallyState,
    *,
    iou_threshold: float = 0.04,
    top_concepts: int = 5,
) -> LayerResult:
    """Label every unit: per category the best label (ties: lowest number), then the best category (ties:
    the earlier one); interpretable when its IoU > `iou_threshold`."""
    if scan_state.layer != tally_state.layer:
        raise DissectionError(f"scan of {scan_state.layer!r} does not match tally of {tally_state.layer!r}")
    iou = iou_matrix(probe, tally_state)
    cats = probe.label_category
    members = [np.nonzero(cats == c)[0] for c in range(len(probe.categories))]
    units = []
    for channel in range(iou.shape[0]):
        per_category = []
        best: tuple[float, int, int] | None = None
        for c, numbers in enumerate(members):
            if numbers.size == 0:
                per_category.append((0, 0, 0, 0, 0.0))
                continue
            number = int(numbers[np.argmax(iou[channel, numbers])])
            value = float(iou[channel, number])
            truth = int(tally_state.truth[number])
            area = int(tally_state.activation[channel, c])
            per_category.append((number, truth, area, int(tally_state.intersect[channel, number]), value))
            if best is None or value > best[0]:
                best = (value, number, c)
        assert best is not None
        order = np.lexsort((np.arange(iou.shape[1]), -iou[channel]))
        concepts = tuple(
            Concept(probe.label_names[n], probe.categories[cats[n]], float(iou[channel, n]))
            for n in order
            if cats[n] >= 0
        )[:top_concepts]
        ranked = zip(scan_state.top_values[channel], scan_state.top_images[channel], strict=True)
        images = tuple((int(i), float(v)) for v, i in ranked if i >= 0)
        value, number, c = best
        units.append(
            UnitResult(
                channel,
                float(tally_state.thresholds[channel]),
                probe.label_names[number],
                probe.categories[c],
                value,
                value > iou_threshold,
                concepts,
                images,
                tuple(per_category),
            )
        )
    topk = scan_state.top_values.shape[1]
    return LayerResult(tally_state.layer, tally_state.semantics, iou_threshold, topk, iou, tuple(units))


def _unit_name(result: LayerResult, unit: int) -> str:
    """Folder and file name of a unit's tiles and strip, by its 1-based number."""
    return f"unit_{unit:0{max(4, len(str(len(result.units))))}d}"


def result_json(result: LayerResult, probe: ProbeSet) -> dict[str, Any]:
    """The result.json document (schema in the module docstring)."""
    interpretable = [u for u in result.units if u.interpretable]
    per_concept: dict[str, int] = {}
    for unit in interpretable:
        per_concept[unit.label] = per_concept.get(unit.label, 0) + 1
    units = []
    for unit in result.units:
        name = _unit_name(result, unit.channel + 1)
        units.append(
            {
                "unit": unit.channel + 1,
                "channel": unit.channel,
                "threshold": unit.threshold,
                "label": unit.label,
                "category": unit.category,
                "iou": unit.iou,
                "interpretable": unit.interpretable,
                "concepts": [{"label": c.label, "category": c.category, "iou": c.iou} for c in unit.concepts],
                "strip": f"strips/{name}.jpg",
                "images": [
                    {
                        "image": probe.images[index].image,
                        "index": index,
                        "activation": value,
                        "tile": f"tiles/{name}/{rank:02d}.jpg",
                    }
                    for rank, (index, value) in enumerate(unit.images)
                ],
            }
        )
    return {
        "schema": SCHEMA,
        "layer": result.layer,
        "semantics": result.semantics,
        "probe_set": str(probe.root.resolve()),
        "num_images": len(probe),
        "num_units": len(result.units),
        "topk": result.topk,
        "iou_threshold": result.iou_threshold,
        "categories": list(probe.categories),
        "summary": {
            "interpretable": len(interpretable),
            "unique_concepts": len(per_concept),
            "per_category": {cat: sum(u.category == cat for u in interpretable) for cat in probe.categories},
            "per_concept": dict(sorted(per_concept.items(), key=lambda item: (-item[1], item[0]))),
        },
        "units": units,
        "maps": MAPS,
    }


def tally_rows(result: LayerResult, probe: ProbeSet) -> tuple[list[str], list[list[object]]]:
    """tally.csv in NetDissect-Lite's columns, rows sorted by score descending (ties: channel order)."""
    header = ["unit", "category", "label", "score"]
    for cat in probe.categories:
        header += [f"{cat}-label", f"{cat}-truth", f"{cat}-activation", f"{cat}-intersect", f"{cat}-iou"]
    rows = []
    for unit in sorted(result.units, key=lambda u: (-u.iou, u.channel)):
        row: list[object] = [unit.channel + 1, unit.category, unit.label, f"{unit.iou:.6f}"]
        for number, truth, area, inter, value in unit.per_category:
            row += [probe.label_names[number] if number else "", truth, area, inter, f"{value:.6f}"]
        rows.append(row)
    return header, rows


def unit_maps(
    document: dict[str, Any], maps: Callable[[np.ndarray], np.ndarray], *, progress: Progress | None = None
) -> np.ndarray:
    """units x topk x h x w float32: each unit's maps of its ranked images (zeros past its last image), read
    through `maps(indices)` a few images at a time so that memory stays bounded."""
    units = document["units"]
    pairs = [(u, r, entry["index"]) for u, unit in enumerate(units) for r, entry in enumerate(unit["images"])]
    needed = np.unique([index for _, _, index in pairs]).astype(np.int64)
    by_image: dict[int, list[tuple[int, int]]] = {}
    for u, r, index in pairs:
        by_image.setdefault(index, []).append((u, r))
    out: np.ndarray | None = None
    reads = max(1, -(-needed.size // _IMAGES_PER_READ))
    for step, start in enumerate(range(0, needed.size, _IMAGES_PER_READ)):
        chunk = needed[start : start + _IMAGES_PER_READ]
        values = maps(chunk)
        if out is None:
            out = np.zeros((len(units), document["topk"], *values.shape[2:]), np.float32)
        for position, index in enumerate(chunk):
            for u, r in by_image[int(index)]:
                out[u, r] = values[position, units[u]["channel"]]
        if progress:
            progress(step + 1, reads)
    return np.zeros((len(units), document["topk"], 0, 0), np.float32) if out is None else out


def write_layer(
    result: LayerResult,
    probe: ProbeSet,
    out_dir: Path,
    maps: Callable[[np.ndarray], np.ndarray],
    *,
    progress: Progress | None = None,
    unit_href: str = "",
) -> Path:
    """Write tally.csv, result.json, maps.npy, the strips and report.html to `out_dir` (= OUT/<layer>); the
    full-size tiles are made on demand (`render.write_unit_tiles`). `unit_href`: where the report links each
    unit (`render.report_html`; the service's unit pages), none by default.

    Everything goes to a hidden sibling folder that replaces `out_dir` only when complete, so a failed run
    never leaves a folder that looks finished. `maps(indices)` returns those images' activation maps.
    `progress(done, total)` counts the map reads, then the units whose strips are made.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        document = result_json(result, probe)
        header, rows = tally_rows(result, probe)
        with (partial / "tally.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        stored = unit_maps(document, maps, progress=_half(progress, 0))
        np.save(partial / MAPS, stored)
        render_strips(document, probe, partial, stored, progress=_half(progress, 1))
        # compact: the C encoder (an indented dump goes through the pure-Python one, 10x slower)
        (partial / "result.json").write_text(json.dumps(document, separators=(",", ":")))
        write_report(partial, unit_href=unit_href)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def _half(progress: Progress | None, which: int) -> Progress | None:
    """Reports of one of write_layer's two steps as a share of 0..1000 (reads first, then strips)."""
    if progress is None:
        return None
    report = progress

    def half(done: int, total: int) -> None:
        report(500 * which + (500 * done) // max(1, total), 1000)

    return half


def summary_line(folder: Path) -> str:
    """What a CLI prints for a written layer folder: its interpretable units, concepts and commonest ones."""
    document = json.loads((folder / "result.json").read_text())
    summary = document["summary"]
    top = ", ".join(
        f"{concept_display(label)} {count}" for label, count in list(summary["per_concept"].items())[:8]
    )
    return (
        f"{summary['interpretable']}/{document['num_units']} units covering "
        f"{summary['unique_concepts']} concepts with IoU > {document['iou_threshold']:g}"
        + (f" ({top})" if top else "")
    )
