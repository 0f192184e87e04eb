"""The simulated crowd, and Dawid–Skene against majority vote on its answers."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from annotate.categories import CODES
from annotate.comparison import Answer, UnitRecord, canonical_word, dawid_skene, majority_vote, summarize
from annotate.crowd import FALLBACK_WORDS, PLAUSIBLE_CONFUSIONS, TrueUnit, make_crowd, simulate_answers


def _units(seed: int, count: int) -> list[TrueUnit]:
    rng = np.random.default_rng(seed)
    units = []
    for i, k in enumerate(rng.integers(len(CODES), size=count)):
        code = CODES[int(k)]
        units.append(TrueUnit(f"u{i:03d}", code, (FALLBACK_WORDS[code][i % 3],)))
    return units


def _accuracies(units: list[TrueUnit], answers) -> tuple[float, float]:
    per_unit = defaultdict(list)
    for answer in answers:
        per_unit[answer.unit_key].append((answer.worker, answer.category))
    pairs = [per_unit[unit.unit_key] for unit in units]
    truth = [unit.category for unit in units]
    majority = np.mean([majority_vote(c for _, c in pair) == t for pair, t in zip(pairs, truth)])
    ds = np.mean([label == t for label, t in zip(dawid_skene(pairs).labels, truth)])
    return float(majority), float(ds)


def test_dawid_skene_is_at_least_as_good_as_majority_vote_with_an_honest_crowd() -> None:
    units = _units(0, 200)
    answers = simulate_answers(units, make_crowd(workers=9, spammers=0, accuracy=0.7), seed=0)
    majority, ds = _accuracies(units, answers)
    assert ds >= majority
    assert majority > 0.9


def test_dawid_skene_beats_majority_vote_when_a_third_of_the_crowd_spams() -> None:
    units = _units(0, 200)
    answers = simulate_answers(units, make_crowd(workers=9, spammers=3, accuracy=0.7), seed=0)
    majority, ds = _accuracies(units, answers)
    assert ds > majority
    assert ds - majority >= 0.03, (majority, ds)


def test_dawid_skene_spots_the_spammers() -> None:
    units = _units(1, 200)
    crowd = make_crowd(workers=9, spammers=3, accuracy=0.7)
    answers = simulate_answers(units, crowd, seed=1)
    records = defaultdict(list)
    for answer in answers:
        records[answer.unit_key].append(Answer(answer.worker, answer.words, answer.category, answer.precision))
    summary = summarize([UnitRecord(u.unit_key, "conv", answers=tuple(records[u.unit_key])) for u in units], n_resamples=10)
    accuracy = {row["worker"]: row["ds_accuracy"] for row in summary["tables"]["workers"]}
    honest = [accuracy[w.name] for w in crowd if not w.spammer]
    spammers = [accuracy[w.name] for w in crowd if w.spammer]
    assert max(spammers) < 0.35 < 0.55 < min(honest)


def test_simulation_is_deterministic_for_a_seed() -> None:
    units = _units(2, 20)
    crowd = make_crowd(workers=5, spammers=1, accuracy=0.8)
    assert simulate_answers(units, crowd, seed=7) == simulate_answers(units, crowd, seed=7)
    assert simulate_answers(units, crowd, seed=7) != simulate_answers(units, crowd, seed=8)


def test_perfect_honest_workers_give_the_true_answer_in_some_spelling() -> None:
    units = [TrueUnit("a", "object", ("dog", "hound")), TrueUnit("b", "region", ("sky",), images=10, fitting=1.0)]
    answers = simulate_answers(units, make_crowd(workers=20, spammers=0, accuracy=1.0), seed=3)
    assert len(answers) == 40
    for answer in answers:
        unit = units[0] if answer.unit_key == "a" else units[1]
        assert answer.category == unit.category
        assert canonical_word(answer.words) in {canonical_word(word) for word in unit.words}
    assert len({answer.words for answer in answers}) > 3, "spellings vary (case, plural, spaces)"
    assert all(answer.rejected == () and answer.precision == 1.0 for answer in answers if answer.unit_key == "b")


def test_wrong_honest_answers_are_plausible_confusions() -> None:
    units = _units(4, 60)
    answers = simulate_answers(units, make_crowd(workers=4, spammers=0, accuracy=0.5), seed=4)
    truth = {unit.unit_key: unit.category for unit in units}
    wrong = [answer for answer in answers if answer.category != truth[answer.unit_key]]
    assert wrong
    assert all(answer.category in PLAUSIBLE_CONFUSIONS[truth[answer.unit_key]] for answer in wrong)


def test_spammers_answer_every_category_and_click_half_the_images() -> None:
    units = _units(5, 300)
    answers = simulate_answers(units, make_crowd(workers=1, spammers=1, accuracy=0.9), seed=5)
    counts = Counter(answer.category for answer in answers)
    assert set(counts) == set(CODES)
    assert min(counts.values()) > 30
    assert np.mean([answer.precision for answer in answers]) == pytest.approx(0.5, abs=0.03)


def test_per_unit_draws_distinct_workers() -> None:
    units = _units(6, 30)
    crowd = make_crowd(workers=6, spammers=2, accuracy=0.8)
    answers = simulate_answers(units, crowd, seed=6, per_unit=3)
    by_unit = defaultdict(list)
    for answer in answers:
        by_unit[answer.unit_key].append(answer.worker)
    assert all(len(workers) == len(set(workers)) == 3 for workers in by_unit.values())
    assert len({w for workers in by_unit.values() for w in workers}) == 6


def test_crowd_names_and_bad_arguments() -> None:
    crowd = make_crowd(workers=3, spammers=1, accuracy=0.8, prefix="demo")
    assert [w.name for w in crowd] == ["demo-honest-01", "demo-honest-02", "demo-spammer-01"]
    with pytest.raises(ValueError, match="spammers must be between 0 and workers"):
        make_crowd(workers=2, spammers=3, accuracy=0.8)
    with pytest.raises(ValueError, match="accuracy must be in"):
        make_crowd(workers=2, spammers=0, accuracy=1.2)
    with pytest.raises(ValueError, match="per_unit must be between 1 and the crowd size"):
        simulate_answers(_units(0, 2), crowd, per_unit=4)
    with pytest.raises(ValueError, match="unit 'x': category 'animal'"):
        simulate_answers([TrueUnit("x", "animal", ("dog",))], crowd)
    with pytest.raises(ValueError, match="unit 'x': no concept words"):
        simulate_answers([TrueUnit("x", "object", (" ",))], crowd)
    with pytest.raises(ValueError, match="the crowd is empty"):
        simulate_answers(_units(0, 2), [])
