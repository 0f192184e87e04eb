"""Compare dissections across networks, training checkpoints and fine-tuning, from their result.json files.

Network Dissection's headline figures are comparisons: unique concept detectors per category across
architectures, their emergence over training, and what fine-tuning does to each unit. Every figure here is
computed from stored results (never by dissecting again):

- per run and layer: units, interpretable units (IoU > the threshold), unique concepts among them, and per
  concept category the interpretable units, their unique concepts and their share of the interpretable units;
- for runs with training steps, those figures as series in step order;
- for each pair of consecutive runs (in step order when every run has a step, else as given) that share a
  layer of the same width, the unit-by-unit transition: each channel's label and IoU on both sides and its
  status — kept (interpretable on both sides, same concept), changed (both, another concept), gained, lost, or
  neither — the category transition matrix (rows before, columns after, "none" for not interpretable), and
  the changed units ranked by how strong a detector they are on both sides (the smaller of the two IoUs,
  then the channel).

Runs dissected on different probe sets or with different semantics are not comparable and are refused unless
`allow_mismatch` is set.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dissection.errors import DissectionError

SCHEMA = 1
NONE = "none"
STATUSES = ("kept", "changed", "gained", "lost", "neither")


class CompareError(DissectionError):
    """Results that cannot be compared: the message names the folder, run or layer."""


@dataclass(frozen=True)
class RunSpec:
    """One dissection to compare: its output folder (a run's OUT, or one layer's folder), a name, and where
    it sits in training (`step`) or anything else worth grouping by (`tags`: architecture, stage, ...)."""

    name: str
    folder: Path
    step: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedRun:
    spec: RunSpec
    layers: dict[str, dict[str, Any]]  # layer -> result.json document
    folders: dict[str, Path]  # layer -> its folder (strips are relative to it)


def load_run(spec: RunSpec) -> LoadedRun:
    """The result.json of every layer under `spec.folder` (or of the folder itself)."""
    folder = Path(spec.folder)
    if not folder.is_dir():
        raise CompareError(f"{folder}: no such folder (run {spec.name!r})")
    paths = (
        [folder / "result.json"]
        if (folder / "result.json").is_file()
        else sorted(folder.glob("*/result.json"))
    )
    if not paths:
        raise CompareError(f"{folder}: holds no result.json, nor layer folders with one (run {spec.name!r})")
    layers: dict[str, dict[str, Any]] = {}
    folders: dict[str, Path] = {}
    for path in paths:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CompareError(f"{path}: not a readable result.json ({exc})") from None
        if not isinstance(document, dict) or document.get("schema") != SCHEMA or "units" not in document:
            raise CompareError(f"{path}: not a result.json of schema {SCHEMA} (run {spec.name!r})")
        layers[str(document["layer"])] = document
        folders[str(document["layer"])] = path.parent
    return LoadedRun(spec, layers, folders)


def load_runs(specs: Sequence[RunSpec], *, allow_mismatch: bool = False) -> list[LoadedRun]:
    """Every run's results, checked to be comparable (see `check_comparable`)."""
    if len(specs) < 2:
        raise CompareError("compare needs at least two runs")
    runs = [load_run(spec) for spec in specs]
    check_comparable(runs, allow_mismatch=allow_mismatch)
    return runs


def check_comparable(runs: Sequence[LoadedRun], *, allow_mismatch: bool = False) -> None:
    """At least two runs, distinct names, a layer in common, and (unless `allow_mismatch`) one probe set and
    one semantics."""
    if len(runs) < 2:
        raise CompareError("compare needs at least two runs")
    names = [run.spec.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CompareError(f"run names must differ: {', '.join(map(repr, repeated))} given twice")
    if not set.intersection(*(set(run.layers) for run in runs)):
        shown = "; ".join(f"{run.spec.name}: {', '.join(sorted(run.layers))}" for run in runs)
        raise CompareError(f"the runs share no layer ({shown})")
    if allow_mismatch:
        return
    for key, what in (("probe_set", "probe set"), ("semantics", "semantics")):
        seen = {
            f"{run.spec.name}/{layer}": str(document.get(key))
            for run in runs
            for layer, document in run.layers.items()
        }
        if len(set(seen.values())) > 1:
            shown = "; ".join(f"{where}: {value}" for where, value in seen.items())
            raise CompareError(
                f"the runs were dissected with different {what}s ({shown}); pass allow_mismatch "
                "(--allow-mismatch) to compare them anyway"
            )


def _interpretable(unit: Mapping[str, Any], threshold: float) -> bool:
    return float(unit["iou"]) > threshold


def _threshold(document: Mapping[str, Any], iou_threshold: float | None) -> float:
    return float(document["iou_threshold"]) if iou_threshold is None else iou_threshold


def layer_summary(document: Mapping[str, Any], *, iou_threshold: float | None = None) -> dict[str, Any]:
    """The figures of one run's layer; every category of the probe set appears, with zeros if need be."""
    threshold = _threshold(document, iou_threshold)
    units = document["units"]
    detectors = [unit for unit in units if _interpretable(unit, threshold)]
    categories = list(document.get("categories") or sorted({unit["category"] for unit in units}))
    per_category = {}
    for category in categories:
        members = [unit for unit in detectors if unit["category"] == category]
        per_category[category] = {
            "units": len(members),
            "unique_concepts": len({unit["label"] for unit in members}),
            "share": len(members) / len(detectors) if detectors else 0.0,
        }
    return {
        "units": len(units),
        "interpretable": len(detectors),
        "unique_concepts": len({unit["label"] for unit in detectors}),
        "iou_threshold": threshold,
        "per_category": per_category,
    }


def _ordered(runs: Sequence[LoadedRun]) -> list[LoadedRun]:
    """Step order when every run has a step (ties keep the given order), else the order given."""
    if all(run.spec.step is not None for run in runs):
        return sorted(runs, key=lambda run: run.spec.step if run.spec.step is not None else 0)
    return list(runs)


def _side(unit: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    return {
        "label": unit["label"],
        "category": unit["category"],
        "iou": float(unit["iou"]),
        "interpretable": _interpretable(unit, threshold),
    }


def transition(
    before: Mapping[str, Any], after: Mapping[str, Any], *, iou_threshold: float | None = None
) -> dict[str, Any]:
    """Unit by unit, what became of each channel of a layer between two runs (see the module docstring)."""
    if before["layer"] != after["layer"] or len(before["units"]) != len(after["units"]):
        raise CompareError(
            f"layer {before['layer']!r} ({len(before['units'])} units) and layer {after['layer']!r} "
            f"({len(after['units'])} units) are not the same layer of one architecture"
        )
    categories = [*dict.fromkeys([*before.get("categories", []), *after.get("categories", [])]), NONE]
    matrix = [[0] * len(categories) for _ in categories]
    counts = dict.fromkeys(STATUSES, 0)
    rows: list[dict[str, Any]] = []
    by_channel = {int(unit["channel"]): unit for unit in after["units"]}
    for unit_a in sorted(before["units"], key=lambda unit: int(unit["channel"])):
        channel = int(unit_a["channel"])
        a = _side(unit_a, _threshold(before, iou_threshold))
        b = _side(by_channel[channel], _threshold(after, iou_threshold))
        if a["interpretable"] and b["interpretable"]:
            status = "kept" if a["label"] == b["label"] else "changed"
        elif b["interpretable"]:
            status = "gained"
        elif a["interpretable"]:
            status = "lost"
        else:
            status = "neither"
        counts[status] += 1
        row_category = a["category"] if a["interpretable"] else NONE
        column_category = b["category"] if b["interpretable"] else NONE
        matrix[categories.index(row_category)][categories.index(column_category)] += 1
        rows.append({"channel": channel, "unit": channel + 1, "status": status, "before": a, "after": b})
    changed = [row for row in rows if row["status"] == "changed"]
    changed.sort(key=lambda row: (-min(row["before"]["iou"], row["after"]["iou"]), row["channel"]))
    return {
        "layer": before["layer"],
        "counts": counts,
        "categories": categories,
        "matrix": matrix,
        "units": rows,
        "changed_most": [row["channel"] for row in changed],
    }


def compare(runs: Sequence[LoadedRun], *, iou_threshold: float | None = None) -> dict[str, Any]:
    """The compare.json document: every figure of the module docstring."""
    ordered = _ordered(runs)
    shared = sorted(set.intersection(*(set(run.layers) for run in runs)))
    layers: dict[str, Any] = {}
    for layer in sorted(set().union(*(run.layers for run in runs))):
        layers[layer] = {
            run.spec.name: layer_summary(run.layers[layer], iou_threshold=iou_threshold)
            for run in ordered
            if layer in run.layers
        }
    series: dict[str, Any] = {}
    stepped = [run for run in ordered if run.spec.step is not None]
    if len(stepped) >= 2:
        for layer in shared:
            figures = [layers[layer][run.spec.name] for run in stepped]
            categories = list(figures[0]["per_category"])
            series[layer] = {
                "runs": [run.spec.name for run in stepped],
                "steps": [run.spec.step for run in stepped],
                "interpretable": [figure["interpretable"] for figure in figures],
                "unique_concepts": [figure["unique_concepts"] for figure in figures],
                "unique_per_category": {
                    category: [
                        figure["per_category"].get(category, {}).get("unique_concepts", 0)
                        for figure in figures
                    ]
                    for category in categories
                },
            }
    transitions, notes = [], []
    for first, second in itertools.pairwise(ordered):
        for layer in shared:
            a, b = first.layers[layer], second.layers[layer]
            if len(a["units"]) != len(b["units"]):
                notes.append(
                    f"no unit-by-unit transition for layer {layer!r} from {first.spec.name!r} to "
                    f"{second.spec.name!r}: {len(a['units'])} and {len(b['units'])} units"
                )
                continue
            transitions.append(
                {"before": first.spec.name, "after": second.spec.name}
                | transition(a, b, iou_threshold=iou_threshold)
            )
    return {
        "schema": SCHEMA,
        "iou_threshold": iou_threshold,
        "runs": [
            {
                "name": run.spec.name,
                "folder": str(run.spec.folder),
                "step": run.spec.step,
                "tags": dict(run.spec.tags),
                "layers": sorted(run.layers),
                "probe_set": next(iter(run.layers.values())).get("probe_set"),
                "semantics": next(iter(run.layers.values())).get("semantics"),
            }
            for run in ordered
        ],
        "layers": layers,
        "series": series,
        "transitions": transitions,
        "notes": notes,
    }
