"""The two-alternative forced-choice study (Borowski et al. 2021, Zimmermann et al. 2021): its seeded design,
its statistics and the model worker the simulated crowd uses, in plain Python.

A trial shows reference images of a unit under one condition (natural top images, feature visualizations,
both, or none) and two query images from the probe set that the references do not contain: one among the
unit's strongest activations, one among its weakest. The worker picks the one they think activates the unit
more. Query images are chosen by `query_pair` (the rule is in its docstring); conditions and sides by
`trial_design`, a Latin square over (worker, unit) with a per-worker balanced side order.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from agreement.statistics import UndefinedStatistic, bootstrap_ci, wilson_interval

CONDITIONS = ("natural", "featviz", "both", "none")
"""What a trial's references are: the unit's top probe images, its feature visualizations, both, or none."""
CATCH = "catch"
"""A catch trial's condition: natural references and an obvious pair (the best query against the worst)."""
LEFT, RIGHT = "left", "right"
CONFIDENCES = (1, 2, 3)


@dataclass(frozen=True)
class QueryPair:
    """A trial's queries as probe-set image indices, with the unit's activation of each (never shown)."""

    strong: int
    weak: int
    strong_activation: float
    weak_activation: float


def _ranked(activations: Sequence[float]) -> list[int]:
    """Image indices by activation, highest first; ties by index, so the order is reproducible."""
    return sorted(range(len(activations)), key=lambda i: (-float(activations[i]), i))


def reference_images(activations: Sequence[float], *, references: int) -> list[int]:
    """The unit's `references` highest-activating probe images (its natural top images, rank 0 first)."""
    return _ranked(activations)[:references]


def query_pair(
    activations: Sequence[float],
    *,
    references: int,
    strong_quantile: float,
    weak_quantile: float,
    seed: str | int,
    catch: bool = False,
) -> QueryPair:
    """The two query images of a unit, given its per-image activation over the whole probe set.

    The rule: rank the N images by activation (highest first, ties by index); the references are ranks
    0..r-1. The strong query is drawn (seeded) from ranks r .. e-1 with e = min(N-1, max(r+1,
    ceil(strong_quantile·N))), i.e. the top `strong_quantile` share without the references (at least the
    image just below them); the weak query from the last max(1, ceil(weak_quantile·N)) ranks that are not
    strong candidates. A catch trial takes the obvious pair: rank r (the best image that is not a reference)
    against rank N-1 (the worst).
    """
    n = len(activations)
    if not 0 < strong_quantile < 1 or not 0 < weak_quantile < 1:
        raise ValueError("the strong and weak quantiles must lie strictly between 0 and 1")
    if strong_quantile + weak_quantile > 1:
        raise ValueError("the strong and weak quantiles overlap (their sum is over 1)")
    if references < 0 or n < references + 2:
        raise ValueError(f"{n} probe images cannot give {references} references and two query images")
    order = _ranked(activations)
    strong_end = min(n - 1, max(references + 1, math.ceil(strong_quantile * n)))
    weak_start = max(strong_end, n - max(1, math.ceil(weak_quantile * n)))
    if catch:
        strong, weak = order[references], order[-1]
    else:
        rng = random.Random(f"{seed}")
        strong = order[rng.randrange(references, strong_end)]
        weak = order[rng.randrange(weak_start, n)]
    return QueryPair(strong, weak, float(activations[strong]), float(activations[weak]))


def _unit_interval(*parts: object) -> float:
    """A number in [0, 1) from its parts, the same on every machine and Python (not `hash`)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class TrialDesign:
    condition: str
    strong_side: str


def trial_design(
    *, seed: int, worker: int, position: int, positions: int, conditions: Sequence[str]
) -> TrialDesign:
    """The condition and the strong query's side of worker number `worker` (0, 1, … in order of arrival) on
    the unit at `position` of the batch's `positions` study units.

    Conditions form a Latin square: condition (position + worker + offset) mod C in a seeded order, so a
    worker who answers C consecutive units has seen every condition, each unit rotates through the
    conditions across workers, and a worker meets a unit once (one assignment per task and worker), so never
    under two conditions. Sides: the worker's positions in a seeded order, the first half with the strong
    query on the left, so each worker's sides are balanced (within one over all units).
    """
    if not conditions:
        raise ValueError("a 2AFC design needs at least one condition")
    if not 0 <= position < positions:
        raise ValueError(f"position {position} is outside the batch's {positions} study units")
    order = list(conditions)
    random.Random(f"conditions|{seed}").shuffle(order)
    condition = order[(position + worker) % len(order)]
    shuffled = sorted(range(positions), key=lambda p: _unit_interval(seed, worker, p))
    strong_side = LEFT if shuffled.index(position) < (positions + 1) // 2 else RIGHT
    return TrialDesign(condition, strong_side)


def design_table(
    *, seed: int, workers: int, positions: int, conditions: Sequence[str]
) -> list[list[TrialDesign]]:
    """The whole design, workers × positions (what `trial_design` gives one cell at a time)."""
    return [
        [
            trial_design(seed=seed, worker=w, position=p, positions=positions, conditions=conditions)
            for p in range(positions)
        ]
        for w in range(workers)
    ]


# --- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """One answered trial, as the statistics see it."""

    unit: str
    layer: str
    condition: str
    correct: bool
    confidence: int
    reaction_ms: int
    worker: str = ""


def _ci(correct: int, n: int) -> tuple[float | None, float | None]:
    try:
        return wilson_interval(correct, n)
    except UndefinedStatistic:
        return None, None


def _median(values: list[int]) -> float | None:
    return float(np.median(values)) if values else None


def _mean(values: list[int]) -> float | None:
    return float(np.mean(values)) if values else None


def condition_table(trials: Iterable[TrialRecord], *, conditions: Sequence[str]) -> list[dict[str, object]]:
    """Per layer (then "all layers") and condition: trials, correct, proportion correct with its Wilson
    95% interval, median reaction time and mean confidence. Catch trials are not counted."""
    groups: dict[tuple[str, str], list[TrialRecord]] = defaultdict(list)
    for trial in trials:
        if trial.condition == CATCH:
            continue
        groups[(trial.layer, trial.condition)].append(trial)
        groups[("all layers", trial.condition)].append(trial)
    layers = [*sorted({layer for layer, _ in groups} - {"all layers"}), "all layers"]
    rows: list[dict[str, object]] = []
    for layer in layers:
        for condition in conditions:
            group = groups.get((layer, condition), [])
            correct = sum(t.correct for t in group)
            low, high = _ci(correct, len(group))
            rows.append(
                {
                    "layer": layer,
                    "condition": condition,
                    "trials": len(group),
                    "correct_trials": correct,
                    "proportion_correct": correct / len(group) if group else None,
                    "ci_low": low,
                    "ci_high": high,
                    "median_reaction_ms": _median([t.reaction_ms for t in group]),
                    "mean_confidence": _mean([t.confidence for t in group]),
                }
            )
    return rows


def condition_difference(
    trials: Sequence[TrialRecord],
    first: str,
    second: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """Proportion correct under `first` minus under `second`, with a 95% percentile bootstrap interval that
    resamples units (a unit's trials stay together: they share its images). None where undefined."""
    units = sorted({t.unit for t in trials if t.condition in (first, second)})
    index = {unit: k for k, unit in enumerate(units)}
    counts = np.zeros((len(units), 4), dtype=np.int64)  # correct first, trials first, correct second, second
    for t in trials:
        if t.condition in (first, second):
            column = 0 if t.condition == first else 2
            counts[index[t.unit], column] += int(t.correct)
            counts[index[t.unit], column + 1] += 1

    def difference(draw: np.ndarray) -> float:
        totals = counts[draw].sum(0)
        if not totals[1] or not totals[3]:
            raise UndefinedStatistic(f"no trials under {first if not totals[1] else second}")
        return float(totals[0] / totals[1] - totals[2] / totals[3])

    row: dict[str, object] = {"first": first, "second": second, "difference": None, "ci_low": None}
    row["ci_high"] = None
    row["reason"] = ""
    try:
        row["difference"] = difference(np.arange(len(units)))
        row["ci_low"], row["ci_high"] = bootstrap_ci(
            len(units), difference, n_resamples=n_resamples, seed=seed
        )
    except UndefinedStatistic as exc:
        row["reason"] = str(exc)
    return row


def condition_differences(
    trials: Sequence[TrialRecord], *, conditions: Sequence[str], n_resamples: int = 1000, seed: int = 0
) -> list[dict[str, object]]:
    """Every pair of conditions, in the batch's order (first minus second), over all layers."""
    study = [t for t in trials if t.condition != CATCH]
    return [
        condition_difference(study, a, b, n_resamples=n_resamples, seed=seed)
        for i, a in enumerate(conditions)
        for b in conditions[i + 1 :]
    ]


def unit_table(trials: Iterable[TrialRecord]) -> list[dict[str, object]]:
    """Per unit: trials, correct, proportion with its Wilson interval, and `predictable`: whether people
    could predict it, i.e. the interval's lower end lies above chance (0.5)."""
    groups: dict[str, list[TrialRecord]] = defaultdict(list)
    for trial in trials:
        if trial.condition != CATCH:
            groups[trial.unit].append(trial)
    rows: list[dict[str, object]] = []
    for unit in sorted(groups):
        group = groups[unit]
        correct = sum(t.correct for t in group)
        low, high = _ci(correct, len(group))
        rows.append(
            {
                "unit": unit,
                "layer": group[0].layer,
                "trials": len(group),
                "correct_trials": correct,
                "proportion_correct": correct / len(group),
                "ci_low": low,
                "ci_high": high,
                "predictable": low is not None and low > 0.5,
            }
        )
    return rows


# --- the model worker --------------------------------------------------------------------------------------

NOISE = {"natural": 0.6, "both": 0.5, "featviz": 1.0, "none": 4.0, CATCH: 0.2}
"""A model worker's noise per condition, in units of the pair's activation gap: P(correct) = Φ(1 / noise)."""


@dataclass(frozen=True)
class ModelAnswer:
    choice: str
    confidence: int
    think_ms: int


def model_answer(
    *,
    strong_activation: float,
    weak_activation: float,
    strong_side: str,
    condition: str,
    rng: random.Random,
    noise: dict[str, float] | None = None,
) -> ModelAnswer:
    """A model worker: compares the two queries' activations plus Gaussian noise whose size depends on the
    condition (what the references let them see), picks the larger, and is the more confident (and the
    quicker, give or take a lognormal spread) the larger the noisy margin."""
    scale = (noise or NOISE)[condition] * max(strong_activation - weak_activation, 1e-9)
    margin = (strong_activation - weak_activation) + rng.gauss(0.0, scale)
    picked_strong = margin > 0
    other = RIGHT if strong_side == LEFT else LEFT
    z = abs(margin) / scale
    confidence = 3 if z > 1.5 else 2 if z > 0.5 else 1
    think_ms = int((800 + 2400 / confidence) * rng.lognormvariate(0.0, 0.25))
    return ModelAnswer(strong_side if picked_strong else other, confidence, think_ms)


# --- the plot --------------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def condition_plot_svg(rows: Sequence[dict[str, object]], *, layer: str = "all layers") -> str:
    """Proportion correct per condition (one layer's rows of `condition_table`) as an SVG bar chart with
    its Wilson intervals and a dashed line at chance; an accessible name and a description say the same."""
    shown = [row for row in rows if row["layer"] == layer]
    width, height, left, bottom, top = 420, 240, 48, 40, 36
    plot_h = height - bottom - top
    step = (width - left - 16) / max(1, len(shown))

    def y(value: float) -> float:
        return top + plot_h * (1 - value)

    described = "; ".join(
        f"{row['condition']}: "
        + (
            f"{float(row['proportion_correct']):.0%} correct of {row['trials']} trials"  # type: ignore[arg-type]
            if row["proportion_correct"] is not None
            else "no trials"
        )
        for row in shown
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="twoafc-plot-title twoafc-plot-desc" class="twoafc-plot">',
        f'<title id="twoafc-plot-title">Proportion correct per condition, {_escape(layer)}</title>',
        f'<desc id="twoafc-plot-desc">{_escape(described)}. Bars show the share of trials where people '
        "picked the strongly activating image, whiskers the Wilson 95% interval; the dashed line is "
        "chance.</desc>",
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">'
        f"Proportion correct, {_escape(layer)}</text>",
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:.1f}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - 8}" y1="{y(0.5):.1f}" y2="{y(0.5):.1f}" stroke="#666" '
        'stroke-dasharray="4 3"/>'
    )
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{y(0):.1f}" stroke="#333"/>')
    for k, row in enumerate(shown):
        x = left + k * step + step * 0.2
        bar_w = step * 0.6
        value = row["proportion_correct"]
        if isinstance(value, float):
            parts.append(
                f'<rect x="{x:.1f}" y="{y(value):.1f}" width="{bar_w:.1f}" height="{y(0) - y(value):.1f}" '
                'fill="#1a5fb4"/>'
            )
            low, high = row["ci_low"], row["ci_high"]
            if isinstance(low, float) and isinstance(high, float):
                cx = x + bar_w / 2
                parts.append(
                    f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" stroke="#000"/>'
                )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">'
            f"{_escape(str(row['condition']))} (n={row['trials']})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
