"""The dashboard's plots as inline SVG text: confusion heatmap, per-layer agreement bars, IoU scatter.

Pure matplotlib (object API on an Agg canvas, never pyplot, so it is safe in a web worker). Each SVG
starts at `<svg` (no XML prolog, so it can be inlined), carries role="img" and a <title>/<desc> for
screen readers, keeps its text as text, and is byte-for-byte reproducible. Every text is drawn
literally: layer names and labels come from users and models, and a `$` in one must neither switch on
mathtext (which raises on input such as "$^_$") nor change what is shown. Every function renders
something sensible for empty input: a plot that says there is nothing yet. Each takes `counts`, a line
under the title that says how many units and answers the plot rests on (`summary_plots` always gives it).
"""

from __future__ import annotations

import functools
import hashlib
import html
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec

import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from agreement.categories import CODES, LABELS
from agreement.summary import DEFAULT_IOU_THRESHOLD

Interval = tuple[float | None, float | None, float | None]
"""(value, low, high) of one bar; None where undefined."""

AGREEMENT_SERIES: dict[str, str] = {
    "fleiss_kappa": "Fleiss' κ (categories)",
    "krippendorff_alpha": "Krippendorff's α (categories)",
    "word_agreement": "Word agreement",
    "category_agreement": "Human = dissection category",
}
"""The summary statistics drawn as agreement bars, with their legend labels."""

VERIFICATION_SERIES: dict[str, str] = {
    "human": "Human consensus label",
    "dissection": "Network Dissection label",
}

_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)
_ID_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')
"""Every id and reference to one, prefixed per plot so that several plots can share one HTML page."""

P = ParamSpec("P")


def _literal_text(render: Callable[P, str]) -> Callable[P, str]:
    """Render with mathtext and TeX off: texts read these settings when created, ticks while drawing."""

    @functools.wraps(render)
    def literal(*args: P.args, **kwargs: P.kwargs) -> str:
        with matplotlib.rc_context({"text.usetex": False, "text.parse_math": False}):
            return render(*args, **kwargs)

    return literal


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _to_svg(figure: Figure, *, title: str, description: str) -> str:
    salt = hashlib.sha256(f"{title}\n{description}".encode()).hexdigest()[:16]
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = _PROLOG.sub("", buffer.getvalue(), count=1)
    svg = _ID_REFERENCE.sub(lambda match: f"{match.group(1)}{salt}-{match.group(2)}", svg)
    title_id, desc_id = f"title-{salt}", f"desc-{salt}"
    opening_end = svg.index(">") + 1
    accessible = (
        f'<title id="{title_id}">{html.escape(title)}</title>'
        f'<desc id="{desc_id}">{html.escape(description)}</desc>'
    )
    opening = svg[: opening_end - 1] + f' role="img" aria-labelledby="{title_id} {desc_id}">'
    return opening + accessible + svg[opening_end:]


def _legend(axes: Axes, handles: Sequence[Artist | tuple[Artist, ...]], labels: Sequence[str]) -> None:
    """A legend from explicit labels, so that a name starting with "_" is shown rather than dropped."""
    axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _titled(title: str, counts: str) -> str:
    return f"{title}\n{counts}" if counts else title


def _empty_note(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="#555555")
    axes.set_xticks([])
    axes.set_yticks([])


@_literal_text
def confusion_heatmap_svg(
    matrix: Sequence[Sequence[int]],
    *,
    labels: Sequence[str] = CODES,
    title: str = "Human consensus versus Network Dissection category",
    xlabel: str = "Network Dissection (mapped to the six categories)",
    ylabel: str = "Human consensus",
    counts: str = "",
) -> str:
    """Counts of units per (human, dissection) category pair; rows human, columns dissection."""
    cells = np.asarray(matrix, dtype=float)
    if cells.size == 0:
        cells = np.zeros((len(labels), len(labels)))
    if cells.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix has shape {cells.shape}; expected {len(labels)} × {len(labels)}")
    names = [LABELS.get(code, code) for code in labels]
    figure = _new_figure(6.4, 5.2)
    axes = figure.add_subplot()
    image = axes.imshow(cells, cmap="Blues", vmin=0, vmax=max(1.0, cells.max()))
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    figure.suptitle(_titled(title, counts))
    figure.colorbar(image, ax=axes, label="Units")
    total = int(cells.sum())
    if total:
        threshold = cells.max() / 2
        for (row, column), value in np.ndenumerate(cells):
            axes.text(
                column,
                row,
                f"{int(value)}",
                ha="center",
                va="center",
                color="white" if value > threshold else "#222222",
                fontsize=9,
            )
    else:
        axes.text(
            0.5,
            0.5,
            "No unit has both a human\nand a dissection category yet",
            ha="center",
            va="center",
            transform=axes.transAxes,
            color="#555555",
        )
    on_diagonal = int(np.trace(cells))
    description = (
        f"{total} units; {on_diagonal} with the same category on both sides."
        if total
        else "No unit has both a human and a dissection category yet."
    )
    return _to_svg(figure, title=_titled(title, counts), description=description)


@_literal_text
def agreement_bars_svg(
    layers: Sequence[str],
    series: Mapping[str, Sequence[Interval | None]],
    *,
    title: str = "Agreement per layer",
    ylabel: str = "Agreement",
    confidence: float = 0.95,
    counts: str = "",
    layer_counts: Sequence[str] | None = None,
) -> str:
    """Grouped bars, one group per layer and one bar per series, with the interval drawn from low to high.

    Undefined values leave a gap marked "n/a"; intervals are drawn as given (a percentile bootstrap
    interval need not be centred on the estimate). `layer_counts` (one per layer) goes under each layer's
    name, e.g. how many units and answers its bars rest on.
    """
    for name, values in series.items():
        if len(values) != len(layers):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(layers)} layers")
    if layer_counts is not None and len(layer_counts) != len(layers):
        raise ValueError(f"{len(layer_counts)} layer counts for {len(layers)} layers")
    title = _titled(title, counts)
    figure = _new_figure(max(6.4, 1.2 * len(layers) + 3), 4.2)
    axes = figure.add_subplot()
    axes.set_title(title)
    if not layers or not series:
        _empty_note(axes, "No layers with answers yet")
        return _to_svg(figure, title=title, description="No layers with answers yet.")
    if all(not value or value[0] is None for values in series.values() for value in values):
        _empty_note(axes, "No value is defined yet\n(the cards above say why)")
        return _to_svg(figure, title=title, description="No value is defined yet.")
    width = 0.8 / len(series)
    positions = np.arange(len(layers), dtype=float)
    handles: list[Artist | tuple[Artist, ...]] = []
    for k, values in enumerate(series.values()):
        x = positions - 0.4 + width * (k + 0.5)
        heights = [v[0] if v and v[0] is not None else math.nan for v in values]
        handles.append(axes.bar(x, heights, width=width * 0.9))
        for xi, value in zip(x, values, strict=True):
            if not value or value[0] is None:
                axes.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="#555555")
                continue
            if value[1] is not None and value[2] is not None:
                axes.errorbar(
                    xi,
                    (value[1] + value[2]) / 2,
                    yerr=(value[2] - value[1]) / 2,
                    fmt="none",
                    ecolor="#222222",
                    capsize=3,
                    linewidth=1,
                )
    lowest = min(
        [0.0] + [v for values in series.values() for value in values if value for v in value if v is not None]
    )
    axes.set_ylim(lowest - 0.05, 1.05)
    axes.axhline(0, color="#888888", linewidth=0.8)
    ticks = (
        [f"{layer}\n{note}" for layer, note in zip(layers, layer_counts, strict=True)]
        if layer_counts is not None
        else list(layers)
    )
    axes.set_xticks(positions, ticks, fontsize=8 if layer_counts is not None else None)
    axes.set_xlabel("Layer")
    axes.set_ylabel(f"{ylabel} (bars: {round(confidence * 100)} % interval)")
    _legend(axes, handles, list(series))
    lines = []
    for name, values in series.items():
        parts = []
        for layer, value in zip(layers, values, strict=True):
            parts.append(f"{layer} {value[0]:.2f}" if value and value[0] is not None else f"{layer} n/a")
        lines.append(f"{name}: " + ", ".join(parts))
    if layer_counts is not None:
        lines.append(", ".join(f"{layer}: {note}" for layer, note in zip(layers, layer_counts, strict=True)))
    return _to_svg(figure, title=title, description="; ".join(lines) + ".")


@_literal_text
def iou_agreement_scatter_svg(
    points: Sequence[tuple[str, float, float]],
    *,
    threshold: float = DEFAULT_IOU_THRESHOLD,
    title: str = "Dissection IoU against worker agreement",
    xlabel: str = "IoU of the dissection label",
    ylabel: str = "Word agreement among workers",
    counts: str = "",
) -> str:
    """One dot per unit (layer, IoU, agreement), coloured by layer, with the interpretability threshold."""
    title = _titled(title, counts)
    figure = _new_figure(6.4, 4.6)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if not points:
        _empty_note(axes, "No unit has both an IoU and an agreement yet")
        return _to_svg(figure, title=title, description="No unit has both an IoU and an agreement yet.")
    layers = list(dict.fromkeys(layer for layer, _, _ in points))
    handles: list[Artist | tuple[Artist, ...]] = []
    for layer in layers:
        xs = [iou for name, iou, _ in points if name == layer]
        ys = [agreement for name, _, agreement in points if name == layer]
        handles.append(axes.scatter(xs, ys, s=18, alpha=0.75))
    handles.append(axes.axvline(threshold, color="#888888", linestyle="--", linewidth=1))
    axes.set_ylim(-0.05, 1.05)
    _legend(axes, handles, [*layers, f"IoU = {threshold:g}"])
    description = f"{len(points)} units in {len(layers)} layers; dashed line at IoU {threshold:g}."
    return _to_svg(figure, title=title, description=description)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _rests_on(entry: Mapping[str, Any], answers: str = "answer") -> str:
    return f"{_count(entry['units'], 'unit')} · {_count(entry['answers'], answers)}"


def summary_plots(summary: Mapping[str, Any]) -> dict[str, str]:
    """The dashboard's plots from a `summary.summarize` result: confusion, agreement and scatter, and
    verification (share of human and dissection labels judged correct per layer) when it has one. Each
    says how many units and answers it rests on: the counted units only (those with the minimum of
    answers), and for the scatter and the confusion the units that have both values."""
    layers = summary.get("layers", {})
    layer_names = list(layers)
    series = {
        label: [
            (scope.get(name), *(scope.get("ci", {}).get(name) or (None, None))) for scope in layers.values()
        ]
        for name, label in AGREEMENT_SERIES.items()
    }
    settings = summary.get("settings", {})
    minimum = settings.get("min_answers", 1)
    rows = [
        row
        for row in summary.get("tables", {}).get("units", [])
        if row.get("iou") is not None and row.get("word_agreement") is not None
    ]
    points = [(row["layer"], row["iou"], row["word_agreement"]) for row in rows]
    matrix = summary.get("confusion_matrix", {}).get("matrix", [])
    confidence = settings.get("confidence", 0.95)
    support = summary.get("support", {})
    counted = {"units": summary.get("units_counted", 0), "answers": summary.get("answers_counted", 0)}
    plots = {
        "confusion": confusion_heatmap_svg(
            matrix, counts=_rests_on(support.get("category_agreement", {"units": 0, "answers": 0}))
        ),
        "agreement": agreement_bars_svg(
            layer_names,
            series,
            confidence=confidence,
            counts=f"{_rests_on(counted)} on units with at least {_count(minimum, 'answer')}",
            layer_counts=[
                _rests_on(
                    {"units": scope.get("units_counted", 0), "answers": scope.get("answers_counted", 0)}
                )
                for scope in layers.values()
            ],
        ),
        "scatter": iou_agreement_scatter_svg(
            points,
            threshold=settings.get("iou_threshold", DEFAULT_IOU_THRESHOLD),
            counts=_rests_on({"units": len(rows), "answers": sum(row.get("answers", 0) for row in rows)}),
        ),
    }
    if "verification" in summary:
        verified = [name for name, scope in layers.items() if "verification" in scope]
        judged = {
            label: [
                (entry["share"], *(entry["ci"] or (None, None)))
                for entry in (layers[name]["verification"][source] for name in verified)
            ]
            for source, label in VERIFICATION_SERIES.items()
        }
        plots["verification"] = agreement_bars_svg(
            verified,
            judged,
            title="Labels judged correct in blind verification",
            ylabel="Share of units",
            confidence=confidence,
            counts=" and ".join(
                f"{source} labels: {_rests_on(summary['verification'][source], 'judgement')}"
                for source in VERIFICATION_SERIES
            ),
            layer_counts=[
                " / ".join(
                    _count(layers[name]["verification"][source]["units"], "unit")
                    for source in VERIFICATION_SERIES
                )
                for name in verified
            ],
        )
    return plots
