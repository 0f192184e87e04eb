"""The 2AFC study's pure parts: the query rule, the seeded design's promises, and the statistics held against
slow implementations written from their definitions."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from agreement import twoafc
from agreement.twoafc import CATCH, TrialRecord

CONDITIONS = ("natural", "featviz", "both", "none")


def test_query_pairs_come_from_the_two_ends_and_never_from_the_references() -> None:
    rng = random.Random(3)
    for trial in range(200):
        n = rng.randint(12, 300)
        acts = [rng.gauss(0, 1) for _ in range(n)]
        refs = rng.randint(0, 9)
        pair = twoafc.query_pair(acts, references=refs, strong_quantile=0.1, weak_quantile=0.1, seed=trial)
        order = sorted(range(n), key=lambda i: (-acts[i], i))
        references = set(order[:refs])
        assert pair.strong not in references and pair.weak not in references and pair.strong != pair.weak
        strong_rank, weak_rank = order.index(pair.strong), order.index(pair.weak)
        assert strong_rank < max(refs + 1, math.ceil(0.1 * n))
        assert weak_rank >= n - math.ceil(0.1 * n)
        assert pair.strong_activation == acts[pair.strong] > pair.weak_activation == acts[pair.weak]


def test_a_catch_pair_is_the_best_non_reference_against_the_worst() -> None:
    acts = [5.0, 9.0, 1.0, 7.0, 3.0, 8.0]
    pair = twoafc.query_pair(acts, references=2, strong_quantile=0.2, weak_quantile=0.2, seed=0, catch=True)
    assert (pair.strong, pair.weak) == (3, 2)


@pytest.mark.parametrize(
    ("references", "strong", "weak", "message"),
    [(5, 0.1, 0.1, "cannot give"), (1, 0.0, 0.1, "strictly between"), (1, 0.6, 0.5, "overlap")],
)
def test_impossible_query_settings_are_refused(
    references: int, strong: float, weak: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        twoafc.query_pair(
            [1.0] * 6, references=references, strong_quantile=strong, weak_quantile=weak, seed=0
        )


@pytest.mark.parametrize(
    ("workers", "positions", "conditions"), [(8, 12, CONDITIONS), (5, 7, ("natural", "none"))]
)
def test_the_design_shows_every_worker_every_condition_each_unit_once_with_balanced_sides(
    workers: int, positions: int, conditions: tuple[str, ...]
) -> None:
    table = twoafc.design_table(seed=11, workers=workers, positions=positions, conditions=conditions)
    for row in table:
        assert len(row) == positions  # one trial per unit: never a unit under two conditions
        assert {cell.condition for cell in row} == set(conditions)
        for start in range(positions - len(conditions) + 1):  # any C consecutive units show every condition
            assert {cell.condition for cell in row[start : start + len(conditions)]} == set(conditions)
        sides = Counter(cell.strong_side for cell in row)
        assert abs(sides["left"] - sides["right"]) <= 1
    for position in range(positions):  # units rotate through the conditions across workers
        seen = Counter(table[w][position].condition for w in range(workers))
        assert max(seen.values()) - min(seen.get(c, 0) for c in conditions) <= math.ceil(
            workers / len(conditions)
        )
    assert table == twoafc.design_table(seed=11, workers=workers, positions=positions, conditions=conditions)
    assert table != twoafc.design_table(seed=12, workers=workers, positions=positions, conditions=conditions)


def _trials() -> list[TrialRecord]:
    rows = [
        ("conv3 unit 1", "conv3", "natural", True, 3, 900),
        ("conv3 unit 1", "conv3", "none", False, 1, 2000),
        ("conv3 unit 2", "conv3", "natural", True, 2, 1100),
        ("conv3 unit 2", "conv3", "none", True, 1, 1500),
        ("conv4 unit 1", "conv4", "natural", False, 2, 1300),
        ("conv4 unit 1", "conv4", "none", False, 1, 2500),
        ("conv4 unit 2", "conv4", "natural", True, 3, 700),
        ("conv4 unit 3", "conv4", "none", True, 2, 1200),
        ("conv4 unit 3", CATCH, CATCH, True, 3, 500),
    ]
    return [TrialRecord(u, layer, c, ok, conf, rt) for u, layer, c, ok, conf, rt in rows]


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_the_condition_table_equals_hand_computed_values() -> None:
    rows = {
        (r["layer"], r["condition"]): r
        for r in twoafc.condition_table(_trials(), conditions=("natural", "none"))
    }
    natural = rows[("all layers", "natural")]
    assert (natural["trials"], natural["correct_trials"], natural["proportion_correct"]) == (4, 3, 0.75)
    assert natural["ci_low"] == pytest.approx(_wilson(3, 4)[0]) and natural["ci_high"] == pytest.approx(
        _wilson(3, 4)[1]
    )
    assert natural["median_reaction_ms"] == 1000.0 and natural["mean_confidence"] == 2.5
    none = rows[("conv4", "none")]
    assert (none["trials"], none["correct_trials"], none["proportion_correct"]) == (2, 1, 0.5)
    assert none["median_reaction_ms"] == 1850.0 and none["mean_confidence"] == 1.5
    assert ("catch", "catch") not in rows and sum(
        r["trials"] for r in rows.values() if r["layer"] == "all layers"
    ) == 8


def _slow_difference(trials: list[TrialRecord], seed: int, resamples: int) -> tuple[float, float, float]:
    units = sorted({t.unit for t in trials})

    def diff(chosen: list[str]) -> float | None:
        a = [t.correct for u in chosen for t in trials if t.unit == u and t.condition == "natural"]
        b = [t.correct for u in chosen for t in trials if t.unit == u and t.condition == "none"]
        return None if not a or not b else sum(a) / len(a) - sum(b) / len(b)

    draws = np.random.default_rng(seed).integers(0, len(units), size=(resamples, len(units)))
    values = [v for draw in draws if (v := diff([units[i] for i in draw])) is not None]
    low, high = np.quantile(values, [0.025, 0.975])
    whole = diff(units)
    assert whole is not None
    return whole, float(low), float(high)


def test_the_difference_between_conditions_equals_a_slow_unit_bootstrap() -> None:
    trials = [t for t in _trials() if t.condition != CATCH]
    extra = [
        TrialRecord(f"conv5 unit {i}", "conv5", c, (i + len(c)) % 3 != 0, 2, 1000)
        for i in range(6)
        for c in ("natural", "none")
    ]
    trials += extra
    row = twoafc.condition_difference(trials, "natural", "none", n_resamples=300, seed=4)
    whole, low, high = _slow_difference(trials, seed=4, resamples=300)
    assert row["difference"] == pytest.approx(whole)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert twoafc.condition_differences(trials, conditions=("natural", "none"), n_resamples=300, seed=4) == [
        row
    ]


def test_a_difference_over_too_few_units_says_why() -> None:
    row = twoafc.condition_difference(_trials()[:2], "natural", "none", n_resamples=10)
    assert row["difference"] == 1.0 and row["ci_low"] is None and "too few units" in str(row["reason"])


def test_a_unit_is_predictable_when_its_interval_lies_above_chance() -> None:
    trials = [TrialRecord("a", "l", "natural", True, 3, 1)] * 12 + [
        TrialRecord("b", "l", "none", i % 2 == 0, 1, 1) for i in range(12)
    ]
    rows = {r["unit"]: r for r in twoafc.unit_table(trials)}
    assert rows["a"]["predictable"] is True and rows["a"]["ci_low"] == pytest.approx(_wilson(12, 12)[0])
    assert rows["b"]["predictable"] is False and rows["b"]["proportion_correct"] == 0.5


def test_the_model_worker_is_right_more_often_under_less_noise() -> None:
    rng = random.Random(0)

    def share(condition: str) -> float:
        answers = [
            twoafc.model_answer(
                strong_activation=2.0, weak_activation=1.0, strong_side="right", condition=condition, rng=rng
            )
            for _ in range(2000)
        ]
        assert {a.confidence for a in answers} <= {1, 2, 3}
        return sum(a.choice == "right" for a in answers) / len(answers)

    from statistics import NormalDist

    for condition in ("natural", "featviz", "none"):
        assert share(condition) == pytest.approx(NormalDist().cdf(1 / twoafc.NOISE[condition]), abs=0.04)
