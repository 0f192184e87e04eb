"""Agreement statistics against reference libraries, slow definitions and hand-computed tiny cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from nltk.metrics.agreement import AnnotationTask
from scipy import stats as scipy_stats
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from agreement.categories import CODES
from agreement.statistics import (
    UndefinedStatistic,
    bootstrap_ci,
    category_counts,
    cohen_kappa,
    confusion_matrix,
    fleiss_kappa,
    krippendorff_alpha,
    spearman,
    wilson_interval,
)

SEEDS = range(8)


def _random_ratings(seed: int, *, units: int = 40, equal: bool) -> list[list[str | None]]:
    """Per unit a list of categories from 2–6 raters (or exactly 4), skewed towards a true category."""
    rng = np.random.default_rng(seed)
    ratings = []
    for _ in range(units):
        truth = int(rng.integers(len(CODES)))
        raters = 4 if equal else int(rng.integers(1, 7))
        row = [
            CODES[truth] if rng.random() < 0.6 else CODES[int(rng.integers(len(CODES)))]
            for _ in range(raters)
        ]
        ratings.append(row)
    return ratings


def _fleiss_from_definition(ratings: list[list[str]]) -> float:
    """Fleiss (1971) written out with loops over units, categories and rater pairs."""
    pairable = [row for row in ratings if len(row) >= 2]
    agreements = []
    for row in pairable:
        pairs = list(itertools.permutations(range(len(row)), 2))
        agreements.append(sum(row[i] == row[j] for i, j in pairs) / len(pairs))
    every = [value for row in pairable for value in row]
    chance = sum((every.count(code) / len(every)) ** 2 for code in CODES)
    return (sum(agreements) / len(agreements) - chance) / (1 - chance)


def _alpha_from_definition(ratings: list[list[str]]) -> float:
    """Krippendorff's alpha from the coincidence matrix built pair by pair (Krippendorff 2011)."""
    coincidence = {(c, k): 0.0 for c in CODES for k in CODES}
    for row in ratings:
        if len(row) < 2:
            continue
        for i, j in itertools.permutations(range(len(row)), 2):
            coincidence[(row[i], row[j])] += 1 / (len(row) - 1)
    totals = {c: sum(coincidence[(c, k)] for k in CODES) for c in CODES}
    n = sum(totals.values())
    observed = sum(value for (c, k), value in coincidence.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in CODES for k in CODES if c != k) / (n - 1)
    return 1 - observed / expected


@pytest.mark.parametrize("seed", SEEDS)
def test_fleiss_kappa_equals_statsmodels_and_the_definition(seed: int) -> None:
    ratings = _random_ratings(seed, equal=True)
    table, _ = aggregate_raters(
        np.array([[CODES.index(c) for c in row] for row in ratings]), n_cat=len(CODES)
    )
    ours = fleiss_kappa(category_counts(ratings))
    assert ours == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-12)
    assert ours == pytest.approx(_fleiss_from_definition(ratings), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_fleiss_kappa_with_unequal_raters_follows_the_per_unit_definition(seed: int) -> None:
    ratings = _random_ratings(seed, equal=False)
    assert fleiss_kappa(category_counts(ratings)) == pytest.approx(
        _fleiss_from_definition(ratings), abs=1e-12
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_krippendorff_alpha_equals_nltk_and_the_definition_with_missing_values(seed: int) -> None:
    ratings = _random_ratings(seed, equal=False)
    triples = [(f"worker{w}", f"unit{u}", c) for u, row in enumerate(ratings) for w, c in enumerate(row)]
    ours = krippendorff_alpha(category_counts(ratings))
    assert ours == pytest.approx(AnnotationTask(data=triples).alpha(), abs=1e-12)
    assert ours == pytest.approx(_alpha_from_definition(ratings), abs=1e-12)


def test_hand_computed_fleiss_and_alpha() -> None:
    # counts [[3,0],[2,1],[0,3]]: P̄ = (1 + 1/3 + 1)/3 = 7/9, p = (5/9, 4/9), Pe = 41/81 → κ = 22/40.
    # alpha: n = 9, Σ_u (m² − Σn²)/(m − 1) = 2, n² − Σn_c² = 40 → α = 1 − 8·2/40 = 0.6.
    counts = np.array([[3, 0, 0, 0, 0, 0], [2, 1, 0, 0, 0, 0], [0, 3, 0, 0, 0, 0]])
    assert fleiss_kappa(counts) == pytest.approx(0.55)
    assert krippendorff_alpha(counts) == pytest.approx(0.6)


def test_hand_computed_alpha_with_a_missing_value() -> None:
    # [a,a], [a,b,b], [b]: the lone b is unpairable; n_c = (3, 2), observed 2,
    # expected 25 − 13 = 12 → α = 1/3.
    ratings = [["scene", "scene"], ["scene", "region", "region"], ["region"]]
    assert krippendorff_alpha(category_counts(ratings)) == pytest.approx(1 / 3)


def test_perfect_agreement_on_several_categories_gives_one() -> None:
    counts = category_counts([["scene"] * 3, ["color"] * 3, ["part", "part"]])
    assert fleiss_kappa(counts) == pytest.approx(1.0)
    assert krippendorff_alpha(counts) == pytest.approx(1.0)


@pytest.mark.parametrize("statistic", [fleiss_kappa, krippendorff_alpha])
def test_one_category_everywhere_is_undefined_not_nan(statistic) -> None:
    with pytest.raises(UndefinedStatistic, match="same category"):
        statistic(category_counts([["object"] * 3, ["object"] * 2]))


@pytest.mark.parametrize("statistic", [fleiss_kappa, krippendorff_alpha])
def test_one_worker_per_unit_is_undefined(statistic) -> None:
    with pytest.raises(UndefinedStatistic, match="at least two answers"):
        statistic(category_counts([["object"], ["scene"], [None]]))
    with pytest.raises(UndefinedStatistic, match="at least two answers"):
        statistic(category_counts([]))


def test_category_counts_rejects_unknown_codes() -> None:
    with pytest.raises(ValueError, match="unit 1: unknown category 'animal'"):
        category_counts([["object"], ["animal"]])


@pytest.mark.parametrize("seed", SEEDS)
def test_cohen_kappa_and_confusion_matrix_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    human = [CODES[int(k)] for k in rng.integers(len(CODES), size=60)]
    automatic = [h if rng.random() < 0.5 else CODES[int(rng.integers(len(CODES)))] for h in human]
    matrix = confusion_matrix(human, automatic)
    assert matrix.tolist() == sk_confusion_matrix(human, automatic, labels=list(CODES)).tolist()
    assert cohen_kappa(matrix) == pytest.approx(
        cohen_kappa_score(human, automatic, labels=list(CODES)), abs=1e-12
    )


def test_hand_computed_cohen_kappa() -> None:
    # [[2,1],[0,1]]: p_o = 3/4, p_e = (3·2 + 1·2)/16 = 1/2 → κ = 0.5.
    matrix = confusion_matrix(["scene", "scene", "scene", "region"], ["scene", "scene", "region", "region"])
    assert matrix[0].tolist() == [2, 1, 0, 0, 0, 0]
    assert cohen_kappa(matrix) == pytest.approx(0.5)


def test_cohen_kappa_degenerate_cases() -> None:
    with pytest.raises(UndefinedStatistic, match="at least one unit"):
        cohen_kappa(np.zeros((6, 6)))
    with pytest.raises(UndefinedStatistic, match="same category"):
        cohen_kappa(confusion_matrix(["object"] * 3, ["object"] * 3))
    assert cohen_kappa(confusion_matrix(["object", "scene"], ["object", "scene"])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 human categories but 1"):
        confusion_matrix(["object", "scene"], ["object"])


def _average_ranks(values: list[float]) -> np.ndarray:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = np.empty(len(values))
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in order[start : end + 1]:
            ranks[position] = (start + end) / 2 + 1
        start = end + 1
    return ranks


@pytest.mark.parametrize("seed", SEEDS)
def test_spearman_is_the_pearson_correlation_of_average_ranks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.random(30).round(1).tolist()
    y = (np.asarray(x) + rng.normal(0, 0.3, 30)).round(1).tolist()
    rho, p_value = spearman(x, y)
    assert rho == pytest.approx(np.corrcoef(_average_ranks(x), _average_ranks(y))[0, 1], abs=1e-12)
    assert 0.0 <= p_value <= 1.0


def test_spearman_degenerate_cases() -> None:
    with pytest.raises(UndefinedStatistic, match="at least 3 units"):
        spearman([0.1, 0.2], [0.3, 0.4])
    with pytest.raises(UndefinedStatistic, match="constant"):
        spearman([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])


@pytest.mark.parametrize(("successes", "trials"), [(0, 1), (1, 2), (7, 10), (9, 9), (42, 117)])
def test_wilson_interval_equals_statsmodels(successes: int, trials: int) -> None:
    low, high = wilson_interval(successes, trials)
    expected = proportion_confint(successes, trials, alpha=0.05, method="wilson")
    assert (low, high) == pytest.approx(expected, abs=1e-9)


def test_wilson_interval_without_trials_is_undefined() -> None:
    with pytest.raises(UndefinedStatistic, match="no units"):
        wilson_interval(0, 0)


def test_bootstrap_is_the_percentile_of_resampled_statistics() -> None:
    values = np.random.default_rng(5).random(25)
    low, high = bootstrap_ci(len(values), lambda idx: float(values[idx].mean()), n_resamples=500, seed=3)
    draws = np.random.default_rng(3).integers(0, 25, size=(500, 25))
    means = [values[draw].mean() for draw in draws]
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=1e-12)
    assert bootstrap_ci(len(values), lambda idx: float(values[idx].mean()), n_resamples=500, seed=3) == (
        low,
        high,
    )


def test_bootstrap_agrees_with_scipy_percentile_bootstrap() -> None:
    values = np.random.default_rng(11).normal(size=60)
    ours = bootstrap_ci(len(values), lambda idx: float(values[idx].mean()), n_resamples=4000, seed=1)
    theirs = scipy_stats.bootstrap(
        (values,), np.mean, n_resamples=4000, method="percentile", rng=2
    ).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.03)


def test_bootstrap_with_too_few_units_or_mostly_undefined_resamples_gives_a_reason() -> None:
    with pytest.raises(UndefinedStatistic, match=r"too few units .*\(4 < 5\)"):
        bootstrap_ci(4, lambda idx: 0.0)

    def undefined_unless_unit_zero_drawn_thrice(idx: np.ndarray) -> float:
        if np.count_nonzero(idx == 0) < 3:
            raise UndefinedStatistic("rare")
        return 1.0

    with pytest.raises(UndefinedStatistic, match=r"undefined on .* of 200 bootstrap resamples"):
        bootstrap_ci(10, undefined_unless_unit_zero_drawn_thrice, n_resamples=200)
