"""Every table of a compare.json document (`dissection.compare`) as flat rows with machine column names, for
CSV downloads: one row per fact, so that a spreadsheet or pandas can group and plot them without parsing
JSON.

- runs: name, step, tags (key=value;...), layers, probe set, semantics;
- layers: per run and layer, units, interpretable units, unique concepts and the IoU threshold;
- categories: per run, layer and concept category, interpretable units, unique concepts and share;
- series: per layer of runs with training steps, per step, the totals and each category's unique concepts
  (one row per layer, step and category);
- transitions: per pair of runs, layer and unit, both sides and the status, with the rank among the units
  whose concept changed most (1 = strongest on both sides; empty when it did not change);
- transition_matrix: per pair of runs and layer, the units per (category before, category after).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

Table = tuple[list[str], list[list[Any]]]
TABLES = ("runs", "layers", "categories", "series", "transitions", "transition_matrix")
_SIDE = ("label", "category", "iou", "interpretable")


def _steps(document: Mapping[str, Any]) -> dict[str, Any]:
    return {run["name"]: run["step"] for run in document["runs"]}


def compare_table(document: Mapping[str, Any], name: str) -> Table:
    """The columns and rows of table `name` (one of TABLES); KeyError for any other name."""
    steps = _steps(document)
    if name == "runs":
        columns = ["run", "step", "tags", "layers", "probe_set", "semantics"]
        rows = [
            [
                run["name"],
                run["step"],
                ";".join(f"{key}={value}" for key, value in run["tags"].items()),
                ";".join(run["layers"]),
                run["probe_set"],
                run["semantics"],
            ]
            for run in document["runs"]
        ]
    elif name == "layers":
        columns = ["layer", "run", "step", "units", "interpretable", "unique_concepts", "iou_threshold"]
        rows = [
            [layer, run, steps[run], f["units"], f["interpretable"], f["unique_concepts"], f["iou_threshold"]]
            for layer, figures in document["layers"].items()
            for run, f in figures.items()
        ]
    elif name == "categories":
        columns = ["layer", "run", "step", "category", "units", "unique_concepts", "share"]
        rows = [
            [layer, run, steps[run], category, c["units"], c["unique_concepts"], c["share"]]
            for layer, figures in document["layers"].items()
            for run, f in figures.items()
            for category, c in f["per_category"].items()
        ]
    elif name == "series":
        columns = ["layer", "run", "step", "interpretable", "unique_concepts", "category", "category_unique"]
        rows = [
            [layer, run, step, s["interpretable"][i], s["unique_concepts"][i], category, values[i]]
            for layer, s in document["series"].items()
            for i, (run, step) in enumerate(zip(s["runs"], s["steps"], strict=True))
            for category, values in s["unique_per_category"].items()
        ]
    elif name == "transitions":
        columns = ["before", "after", "layer", "unit", "channel", "status", "changed_rank"]
        columns += [f"{side}_{key}" for side in ("before", "after") for key in _SIDE]
        rows = []
        for item in document["transitions"]:
            rank = {channel: i + 1 for i, channel in enumerate(item["changed_most"])}
            rows.extend(
                [item["before"], item["after"], item["layer"], unit["unit"], unit["channel"], unit["status"]]
                + [rank.get(unit["channel"], "")]
                + [unit[side][key] for side in ("before", "after") for key in _SIDE]
                for unit in item["units"]
            )
    elif name == "transition_matrix":
        columns = ["before", "after", "layer", "category_before", "category_after", "units"]
        rows = [
            [item["before"], item["after"], item["layer"], row_category, column_category, value]
            for item in document["transitions"]
            for row_category, values in zip(item["categories"], item["matrix"], strict=True)
            for column_category, value in zip(item["categories"], values, strict=True)
        ]
    else:
        raise KeyError(f"no table {name!r}; tables: {', '.join(TABLES)}")
    return columns, rows


def table_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text with a header row; None is an empty cell, booleans are true/false."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            "" if value is None else str(value).lower() if isinstance(value, bool) else value for value in row
        )
    return out.getvalue()
