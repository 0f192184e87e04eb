"""The simulated crowd, and Dawid–Skene against majority vote on its answers."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from agreement.aggregation import dawid_skene, majority_vote
from agreement.categories import CODES
from agreement.records import Answer, UnitRecord, VerificationAnswer
from agreement.simulation import (
    FALLBACK_WORDS,
    PLAUSIBLE_CONFUSIONS,
    Candidate,
    TrueUnit,
    make_crowd,
    simulate_answers,
    simulate_verification,
)
from agreement.summary import summarize
from agreement.words import canonical_word, synonym_map


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
    majority = np.mean([majority_vote(c for _, c in pair) == t for pair, t in zip(pairs, truth, strict=True)])
    ds = np.mean([label == t for label, t in zip(dawid_skene(pairs).labels, truth, strict=True)])
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
        records[answer.unit_key].append(
            Answer(answer.worker, answer.words, answer.category, answer.precision)
        )
    summary = summarize(
        [UnitRecord(u.unit_key, "conv", answers=tuple(records[u.unit_key])) for u in units], n_resamples=10
    )
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
    units = [
        TrueUnit("a", "object", ("dog", "hound")),
        TrueUnit("b", "region", ("sky",), images=10, fitting=1.0),
    ]
    answers = simulate_answers(units, make_crowd(workers=20, spammers=0, accuracy=1.0), seed=3)
    assert len(answers) == 40
    for answer in answers:
        unit = units[0] if answer.unit_key == "a" else units[1]
        assert answer.category == unit.category
        assert canonical_word(answer.words) in {canonical_word(word) for word in unit.words}
    assert len({answer.words for answer in answers}) > 3, "spellings vary (case, plural, spaces)"
    assert all(
        answer.rejected == () and answer.precision == 1.0 for answer in answers if answer.unit_key == "b"
    )


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


def test_verification_flow_from_simulated_judgements_to_shares() -> None:
    units = [TrueUnit(f"u{i}", "object", ("person", "someone")) for i in range(40)]
    synonyms = synonym_map([{"name": "person", "syns": "individual"}])
    candidates = []
    for i, unit in enumerate(units):
        candidates.append(Candidate(unit.unit_key, "human", "Individuals" if i % 2 else "someone"))
        candidates.append(Candidate(unit.unit_key, "dissection", "person" if i % 4 == 0 else "car"))
    crowd = make_crowd(workers=5, spammers=1, accuracy=1.0)  # four honest votes outweigh the spammer
    judgements = simulate_verification(units, candidates, crowd, seed=2, synonyms=synonyms)
    assert judgements == simulate_verification(units, candidates, crowd, seed=2, synonyms=synonyms)
    assert len(judgements) == 80 * 5
    layer = {unit.unit_key: f"layer{int(unit.unit_key[1:]) % 2}" for unit in units}
    answers = [
        VerificationAnswer(j.unit_key, layer[j.unit_key], j.source, j.worker, j.yes) for j in judgements
    ]
    report = summarize(
        [UnitRecord(u.unit_key, layer[u.unit_key]) for u in units], verification=answers, n_resamples=10
    )
    assert report["verification"]["human"]["share"] == 1.0
    assert report["verification"]["dissection"]["share"] == pytest.approx(10 / 40)
    assert report["layers"]["layer0"]["verification"]["dissection"]["share"] == pytest.approx(10 / 20)
    low, high = report["verification"]["dissection"]["ci"]
    assert low < 0.25 < high


def test_verification_rejects_unknown_units_and_sources() -> None:
    units = [TrueUnit("u", "object", ("dog",))]
    crowd = make_crowd(workers=2, spammers=0, accuracy=0.9)
    with pytest.raises(ValueError, match="candidate 0: unknown unit 'v'"):
        simulate_verification(units, [Candidate("v", "human", "dog")], crowd)
    with pytest.raises(ValueError, match="candidate 0: source must be human or dissection"):
        simulate_verification(units, [Candidate("u", "crowd", "dog")], crowd)
    with pytest.raises(ValueError, match="per_candidate must be between 1"):
        simulate_verification(units, [Candidate("u", "human", "dog")], crowd, per_candidate=3)


def test_honest_judgements_are_right_with_the_given_accuracy() -> None:
    units = [TrueUnit(f"u{i}", "object", ("dog",)) for i in range(400)]
    candidates = [Candidate(u.unit_key, "dissection", "dog" if i % 2 else "cat") for i, u in enumerate(units)]
    judgements = simulate_verification(
        units, candidates, make_crowd(workers=1, spammers=0, accuracy=0.8), seed=9
    )
    right = [j.yes == (j.label == "dog") for j in judgements]
    assert np.mean(right) == pytest.approx(0.8, abs=0.05)
