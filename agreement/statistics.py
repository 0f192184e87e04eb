"""Agreement statistics: Fleiss' κ, Krippendorff's α, Cohen's κ, Spearman's ρ, Wilson and bootstrap intervals.

Each is a small function on NumPy arrays so that the tests can hold it against a reference library
(statsmodels, scikit-learn, nltk, scipy) and a slow implementation written from the definition.
Undefined statistics (kappa when every answer has one category, alpha without a unit rated twice, an
interval over too few units…) raise `UndefinedStatistic` instead of returning NaN, so no NaN reaches JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats

from agreement.categories import CODES

MIN_BOOTSTRAP_UNITS = 5
"""Fewer units than this give no bootstrap interval: resampling two or three units says nothing."""
MIN_DEFINED_RESAMPLES = 0.9
"""Share of bootstrap resamples on which the statistic must be defined for the interval to be reported."""

Counts = npt.NDArray[np.int64]
"""Integer counts: units × classes answers, or a classes × classes confusion matrix."""
Indices = npt.NDArray[np.intp]


class UndefinedStatistic(ValueError):
    """A statistic that has no value on these data; the message says why (it becomes a `reason`)."""


def category_counts(per_unit: Iterable[Iterable[str | None]], *, classes: Sequence[str] = CODES) -> Counts:
    """Units × classes matrix of how many workers picked each class (None answers are missing values)."""
    index = {code: k for k, code in enumerate(classes)}
    rows = []
    for unit, categories in enumerate(per_unit):
        row = np.zeros(len(classes), dtype=np.int64)
        for category in categories:
            if category is None:
                continue
            if category not in index:
                raise ValueError(
                    f"unit {unit}: unknown category {category!r}; expected one of {', '.join(classes)}"
                )
            row[index[category]] += 1
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(-1, len(classes))


def _pairable(counts: npt.ArrayLike, statistic: str) -> tuple[Counts, Counts]:
    matrix = np.asarray(counts, dtype=np.int64)
    raters = matrix.sum(1)
    keep = raters >= 2
    if not keep.any():
        raise UndefinedStatistic(f"{statistic} needs a unit with at least two answers")
    return matrix[keep], raters[keep]


def fleiss_kappa(counts: npt.ArrayLike) -> float:
    """Fleiss' kappa from a units × categories count matrix; units with fewer than two answers are left out.

    With unequal numbers of raters each unit's observed agreement uses its own count n_i,
    P_i = (Σ_j n_ij² − n_i) / (n_i (n_i − 1)), and p_j pools all answers; with equal counts this is
    exactly Fleiss (1971). Undefined when every answer has the same category (chance agreement 1).
    """
    matrix, raters = _pairable(counts, "Fleiss' kappa")
    totals = matrix.sum(0)
    if np.count_nonzero(totals) < 2:
        raise UndefinedStatistic("Fleiss' kappa is undefined: every answer has the same category")
    observed = float((((matrix * matrix).sum(1) - raters) / (raters * (raters - 1))).mean())
    chance = float(((totals / totals.sum()) ** 2).sum())
    return (observed - chance) / (1.0 - chance)


def krippendorff_alpha(counts: npt.ArrayLike) -> float:
    """Krippendorff's alpha (nominal) from a units × categories count matrix; missing answers allowed.

    alpha = 1 − (n − 1) Σ_u (m_u² − Σ_c n_uc²) / (m_u − 1) / (n² − Σ_c n_c²), over the pairable units
    (m_u ≥ 2 answers), n = Σ m_u. Undefined when they use a single category (no expected disagreement).
    """
    matrix, raters = _pairable(counts, "Krippendorff's alpha")
    totals = matrix.sum(0)
    if np.count_nonzero(totals) < 2:
        raise UndefinedStatistic("Krippendorff's alpha is undefined: every answer has the same category")
    n = float(totals.sum())
    observed = float(((raters * raters - (matrix * matrix).sum(1)) / (raters - 1)).sum())
    expected = n * n - float((totals * totals).sum())
    return 1.0 - (n - 1.0) * observed / expected


def confusion_matrix(
    human: Sequence[str], automatic: Sequence[str], *, classes: Sequence[str] = CODES
) -> Counts:
    """classes × classes counts: rows the human category, columns the automatic one (CODES order)."""
    if len(human) != len(automatic):
        raise ValueError(f"{len(human)} human categories but {len(automatic)} automatic ones")
    index = {code: k for k, code in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for position, (h, a) in enumerate(zip(human, automatic, strict=True)):
        if h not in index or a not in index:
            raise ValueError(
                f"pair {position}: unknown category in ({h!r}, {a!r}); expected one of {', '.join(classes)}"
            )
        matrix[index[h], index[a]] += 1
    return matrix


def cohen_kappa(matrix: npt.ArrayLike) -> float:
    """Cohen's kappa of a square confusion matrix; undefined without pairs or when chance agreement is 1."""
    table = np.asarray(matrix, dtype=np.float64)
    n = table.sum()
    if n == 0:
        raise UndefinedStatistic(
            "Cohen's kappa needs at least one unit with both a human and an automatic category"
        )
    observed = np.trace(table) / n
    chance = float((table.sum(1) * table.sum(0)).sum() / (n * n))
    if chance >= 1.0:
        raise UndefinedStatistic("Cohen's kappa is undefined: both sides give every unit the same category")
    return float((observed - chance) / (1.0 - chance))


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (scipy); needs three pairs and no constant side."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} x values but {len(y)} y values")
    if len(x) < 3:
        raise UndefinedStatistic(f"Spearman correlation needs at least 3 units, got {len(x)}")
    if len(set(x)) < 2 or len(set(y)) < 2:
        raise UndefinedStatistic("Spearman correlation is undefined: one side is constant")
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def wilson_interval(successes: int, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy's binomtest)."""
    if trials <= 0:
        raise UndefinedStatistic("no units to estimate a share from")
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def bootstrap_ci(
    n_units: int,
    statistic: Callable[[Indices], float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_units: int = MIN_BOOTSTRAP_UNITS,
) -> tuple[float, float]:
    """Percentile bootstrap over units: `statistic` receives an index array drawn with replacement.

    Resamples on which the statistic is undefined are dropped; with fewer than `min_units` units, or
    when under `MIN_DEFINED_RESAMPLES` of the resamples are defined, there is no interval. The draws come
    from `numpy.random.default_rng(seed)`, so the interval is reproducible.
    """
    if n_units < min_units:
        raise UndefinedStatistic(f"too few units for a bootstrap interval ({n_units} < {min_units})")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(n_resamples, n_units))
    values = []
    for draw in draws:
        try:
            values.append(statistic(draw))
        except UndefinedStatistic:
            continue
    if len(values) < MIN_DEFINED_RESAMPLES * n_resamples:
        raise UndefinedStatistic(
            f"the statistic is undefined on {n_resamples - len(values)} of {n_resamples} bootstrap resamples"
        )
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    return float(low), float(high)
