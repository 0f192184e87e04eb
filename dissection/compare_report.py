"""compare.json and a self-contained compare.html: the figures of `dissection.compare` as a paper prints
them — unique detectors per category per run (grouped bars), their emergence over training steps (lines),
and for each pair of runs the unit transitions with each changed unit's two strips side by side.

The page has inline CSS and SVG and embeds the strips it shows, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dissection.compare import NONE, STATUSES, LoadedRun, compare
from dissection.concepts import concept_display
from dissection.errors import DissectionError
from dissection.render import CATEGORY_COLORS

CHANGED_SHOWN = 24
# (run name, layer, channel) -> the address of that unit's page, or "" when it has none.
UnitUrl = Callable[[str, str, int], str]
_RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem; color: #1f2328; }
h1, h2, h3 { margin: 1.2rem 0 .4rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border-bottom: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #57606a; }
.pair img { height: 56px; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: #1f2328; }
.legend span { display: inline-block; margin-right: 1rem; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: middle; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _color(index: int) -> str:
    return _RUN_COLORS[index % len(_RUN_COLORS)]


def _legend(names: Sequence[str]) -> str:
    items = "".join(
        f'<span><span class="swatch" style="background:{_color(i)}"></span>{_e(name)}</span>'
        for i, name in enumerate(names)
    )
    return f'<p class="legend">{items}</p>'


def grouped_bars_svg(layer: str, figures: dict[str, Any]) -> str:
    """Unique concepts detected per category (groups), one bar per run: the CVPR 2017 comparison figure."""
    runs = list(figures)
    categories = list(next(iter(figures.values()))["per_category"])
    peak = max([1] + [f["per_category"][c]["unique_concepts"] for f in figures.values() for c in categories])
    bar, gap, height, left, bottom = 14, 18, 160, 34, 34
    width = left + len(categories) * (len(runs) * bar + gap) + 10
    parts = []
    for tick in range(peak + 1):
        if peak <= 10 or tick % max(1, peak // 5) == 0:
            y = 10 + height - height * tick / peak
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
            parts.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
    for g, category in enumerate(categories):
        x0 = left + g * (len(runs) * bar + gap) + gap / 2
        for r, run in enumerate(runs):
            value = figures[run]["per_category"][category]["unique_concepts"]
            h = height * value / peak
            parts.append(
                f'<rect x="{x0 + r * bar:.1f}" y="{10 + height - h:.1f}" width="{bar - 2}" height="{h:.1f}" '
                f'fill="{_color(r)}"><title>{_e(run)}, {_e(category)}: {value}</title></rect>'
            )
        parts.append(
            f'<text x="{x0 + len(runs) * bar / 2:.1f}" y="{10 + height + 16}" text-anchor="middle">'
            f"{_e(category)}</text>"
        )
    label = f"Unique concepts detected per category in layer {layer}, one bar per run"
    return (
        f'<svg width="{width}" height="{height + bottom + 10}" role="img" aria-label="{_e(label)}">'
        f"{''.join(parts)}</svg>"
    )


def series_svg(title: str, steps: Sequence[int], lines: dict[str, Sequence[float]]) -> str:
    """One line per series over training steps, each labelled at its end (labels pushed apart so none
    overlaps another)."""
    peak = max([1, *(v for values in lines.values() for v in values)])
    width, height, left, right = 520, 160, 36, 160
    span = max(steps) - min(steps) or 1

    def x_of(step: int) -> float:
        return left + (width - left - right) * (step - min(steps)) / span

    def y_of(value: float) -> float:
        return 10 + height - height * value / peak

    axis = 10 + height
    parts = [f'<line x1="{left}" x2="{width - right}" y1="{axis}" y2="{axis}" stroke="#8c959f"/>']
    parts += [
        f'<text x="{x_of(step):.1f}" y="{axis + 14}" text-anchor="middle">{step}</text>' for step in steps
    ]
    parts.append(f'<text x="{left - 6}" y="{y_of(peak) + 4:.1f}" text-anchor="end">{peak:g}</text>')
    ends: list[tuple[float, str, str]] = []
    for i, (name, values) in enumerate(lines.items()):
        color = CATEGORY_COLORS.get(name, _color(i))
        points = " ".join(f"{x_of(step):.1f},{y_of(v):.1f}" for step, v in zip(steps, values, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        ends.append((y_of(values[-1]), name, color))
    ends.sort()
    for k in range(1, len(ends)):
        ends[k] = (max(ends[k][0], ends[k - 1][0] + 12), ends[k][1], ends[k][2])
    for y, name, color in ends:
        parts.append(f'<text x="{x_of(steps[-1]) + 6:.1f}" y="{y + 4:.1f}" fill="{color}">{_e(name)}</text>')
    parts.append(f'<text x="{left}" y="{axis + 30}">training step</text>')
    bottom = max(axis + 40, int(ends[-1][0]) + 10) if ends else axis + 40
    return (
        f'<svg width="{width}" height="{bottom}" role="img" aria-label="{_e(title)}">{"".join(parts)}</svg>'
    )


def _strip(run: LoadedRun, layer: str, channel: int) -> str:
    """The unit's strip as a data URI (the page is self-contained), or "" when the run has no strips."""
    for unit in run.layers[layer]["units"]:
        if int(unit["channel"]) == channel and unit.get("strip"):
            path = run.folders[layer] / unit["strip"]
            if path.is_file():
                return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()
    return ""


def _unit_link(unit_url: UnitUrl | None, run: str, layer: str, channel: int) -> str:
    url = unit_url(run, layer, channel) if unit_url else ""
    return f' <a href="{_e(url)}">unit {channel + 1} in {_e(run)}</a>' if url else ""


def _transition_html(item: dict[str, Any], runs: dict[str, LoadedRun], unit_url: UnitUrl | None) -> str:
    before, after, layer = item["before"], item["after"], item["layer"]
    counts = "".join(f'<td class="num">{item["counts"][status]}</td>' for status in STATUSES)
    head = "".join(f'<th scope="col">{status}</th>' for status in STATUSES)
    categories = item["categories"]
    matrix = "".join(
        f'<tr><th scope="row">{_e(row_name)}</th>'
        + "".join(f'<td class="num">{value}</td>' for value in row)
        + "</tr>"
        for row_name, row in zip(categories, item["matrix"], strict=True)
    )
    by_channel = {row["channel"]: row for row in item["units"]}
    changed = []
    for channel in item["changed_most"][:CHANGED_SHOWN]:
        row = by_channel[channel]
        images = [_strip(runs[name], layer, channel) for name in (before, after)]
        cells = "".join(
            f'<td class="pair">{_e(concept_display(side["label"]))} '
            f'<span class="muted">{side["category"]}, IoU '
            f"{side['iou']:.3f}</span>"
            + (f'<img src="{src}" alt="Top images of unit {row["unit"]} in {_e(name)}">' if src else "")
            + _unit_link(unit_url, name, layer, channel)
            + "</td>"
            for side, src, name in zip((row["before"], row["after"]), images, (before, after), strict=True)
        )
        changed.append(f'<tr><th scope="row">unit {row["unit"]}</th>{cells}</tr>')
    changed_table = (
        f'<table><thead><tr><th scope="col">unit</th><th scope="col">{_e(before)}</th>'
        f'<th scope="col">{_e(after)}</th></tr></thead><tbody>{"".join(changed)}</tbody></table>'
        if changed
        else '<p class="muted">No unit detects another concept.</p>'
    )
    return (
        f"<h3>{_e(before)} → {_e(after)}, layer {_e(layer)}</h3>"
        f"<table><thead><tr>{head}</tr></thead><tbody><tr>{counts}</tr></tbody></table>"
        f'<table><caption>Concept category before (rows) and after (columns); "{NONE}": not '
        f"interpretable</caption><thead><tr><th></th>"
        + "".join(f'<th scope="col">{_e(c)}</th>' for c in categories)
        + f"</tr></thead><tbody>{matrix}</tbody></table>"
        "<p>Units whose concept changed, strongest on both sides first (unit = channel + 1):</p>"
        f"{changed_table}"
    )


def compare_html(document: dict[str, Any], runs: Sequence[LoadedRun]) -> str:
    """The page for a compare.json document (see the module docstring)."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Comparison of dissections</title>'
        f'<link rel="icon" href="data:,"><style>{_CSS}</style></head>'
        f"<body>{compare_body(document, runs)}</body></html>"
    )


def compare_body(
    document: dict[str, Any], runs: Sequence[LoadedRun], *, unit_url: UnitUrl | None = None
) -> str:
    """The figures and tables of the page, for embedding (the service's comparison page); with `unit_url`,
    each changed unit links to its page in both runs."""
    by_name = {run.spec.name: run for run in runs}
    names = [run["name"] for run in document["runs"]]
    run_rows = "".join(
        f"<tr><td>{_e(run['name'])}</td><td>{'' if run['step'] is None else run['step']}</td>"
        f"<td>{_e(', '.join(f'{k}={v}' for k, v in run['tags'].items()))}</td>"
        f"<td>{_e(', '.join(run['layers']))}</td></tr>"
        for run in document["runs"]
    )
    body = [
        "<h1>Comparison of dissections</h1>",
        '<table><thead><tr><th scope="col">run</th><th scope="col">step</th><th scope="col">tags</th>'
        f'<th scope="col">layers</th></tr></thead><tbody>{run_rows}</tbody></table>',
    ]
    for note in document["notes"]:
        body.append(f'<p class="muted">{_e(note)}</p>')
    for layer, figures in document["layers"].items():
        body.append(f"<h2>Layer {_e(layer)}</h2>")
        rows = "".join(
            f"<tr><td>{_e(name)}</td><td class='num'>{f['units']}</td>"
            f"<td class='num'>{f['interpretable']}</td><td class='num'>{f['unique_concepts']}</td></tr>"
            for name, f in figures.items()
        )
        body.append(
            '<table><thead><tr><th scope="col">run</th><th scope="col">units</th>'
            '<th scope="col">interpretable</th><th scope="col">unique concepts</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
        body.append(_legend([name for name in names if name in figures]))
        body.append(grouped_bars_svg(layer, figures))
        if layer in document["series"]:
            series = document["series"][layer]
            totals = {
                "interpretable units": series["interpretable"],
                "unique concepts": series["unique_concepts"],
            }
            body.append("<h3>Over training</h3>")
            body.append(
                series_svg(
                    f"Interpretable units and unique concepts of layer {layer} over training",
                    series["steps"],
                    totals,
                )
            )
            body.append(
                series_svg(
                    f"Unique concepts per category of layer {layer} over training",
                    series["steps"],
                    series["unique_per_category"],
                )
            )
    if document["transitions"]:
        body.append("<h2>Unit by unit</h2>")
        body.extend(_transition_html(item, by_name, unit_url) for item in document["transitions"])
    return "".join(body)


def write_comparison(runs: Sequence[LoadedRun], out: Path, *, iou_threshold: float | None = None) -> Path:
    """Write OUT/compare.json and OUT/compare.html (each to a temporary name first, then renamed)."""
    document = compare(runs, iou_threshold=iou_threshold)
    page = compare_html(document, runs)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DissectionError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    for name, text in (("compare.json", json.dumps(document, indent=1)), ("compare.html", page)):
        handle, partial = tempfile.mkstemp(prefix=f".{name}-", dir=out)
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        Path(partial).replace(out / name)
    return out
