"""Statistics with guardrails: a minimum of answers per unit, counts behind every figure, notes on
degenerate values, and one-sentence definitions."""

from __future__ import annotations

import numpy as np
import pytest

from agreement.aggregation import dawid_skene
from agreement.categories import CODES
from agreement.glossary import DEFINITIONS
from agreement.records import ALL_LAYERS, Answer, UnitRecord
from agreement.summary import summarize

STATISTICS = (
    "fleiss_kappa",
    "krippendorff_alpha",
    "word_agreement",
    "category_agreement",
    "cohen_kappa",
    "concept_match_rate",
    "mean_precision",
)
BRODEN = {"object": ("object", "dog"), "color": ("color", "red-c"), "part": ("part", "wheel")}


def _records(seed: int, units: int = 30) -> list[UnitRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(units):
        truth = ("object", "color", "part")[i % 3]
        answers = tuple(
            Answer(
                f"w{w}",
                BRODEN[truth][1] if rng.random() < 0.7 else "cat",
                truth if rng.random() < 0.75 else CODES[int(rng.integers(len(CODES)))],
                float(rng.integers(0, 11)) / 10,
            )
            for w in range(int(rng.integers(2, 5)))
        )
        category, label = BRODEN[("object", "color", "part")[int(rng.integers(3))]]
        records.append(
            UnitRecord(f"u{i}", f"conv{i % 2 + 3}", label, category, float(rng.random() / 8), answers)
        )
    return records


def _statistics(scope: dict) -> dict:
    return {name: scope[name] for name in (*STATISTICS, "ci", "confusion_matrix", "spearman_iou_agreement")}


def test_units_below_the_minimum_enter_no_statistic() -> None:
    records = _records(0)
    lone = [
        UnitRecord("lone-a", "conv3", "dog", "object", 0.3, (Answer("w9", "kite", "scene", 0.0),)),
        UnitRecord("lone-b", "conv4", "red-c", "color", 0.2, (Answer("w0", "red", "color", 1.0),)),
        UnitRecord("empty", "conv4", "wheel", "part", 0.1),
    ]
    with_lone = summarize([*records, *lone], n_resamples=50)
    without = summarize(records, n_resamples=50)
    assert _statistics(with_lone) == _statistics(without)
    for layer in ("conv3", "conv4"):
        assert _statistics(with_lone["layers"][layer]) == _statistics(without["layers"][layer])
    assert with_lone["tables"]["workers"] == without["tables"]["workers"], "w9 answered only a lone unit"
    assert with_lone["tables"]["disagreements"] == without["tables"]["disagreements"]
    # shown and counted apart
    assert (with_lone["units"], with_lone["units_counted"]) == (33, 30)
    assert (with_lone["units_apart"], with_lone["units_unanswered"]) == (2, 1)
    assert with_lone["answers"] == with_lone["answers_counted"] + 2
    rows = {row["unit_key"]: row for row in with_lone["tables"]["units"]}
    assert rows["lone-a"]["answers"] == 1 and rows["lone-a"]["counted"] is False
    assert rows["lone-a"]["human_category"] is None and rows["lone-a"]["category_match"] is None
    assert rows["lone-a"]["majority_category"] == "scene", "what the one answer says is still shown"
    assert all(rows[f"u{i}"]["counted"] for i in range(30))
    layers = {row["layer"]: row for row in with_lone["tables"]["layers"]}
    assert (layers["conv4"]["units_apart"], layers["conv4"]["units_unanswered"]) == (1, 1)
    assert layers[ALL_LAYERS]["units_counted"] == 30


def test_a_minimum_of_one_counts_every_answered_unit_and_keeps_a_lone_answer() -> None:
    records = _records(0, units=12)
    lone = UnitRecord("lone", "conv3", "dog", "object", 0.3, (Answer("w0", "kite", "scene", 0.0),))
    fitted = dawid_skene([[(a.worker, a.category) for a in r.answers] for r in [*records, lone]])
    assert fitted.labels[-1] != "scene", "plain Dawid–Skene overrides the lone answer here"
    summary = summarize([*records, lone], n_resamples=20, min_answers=1)
    assert summary["units_counted"] == 13
    row = next(row for row in summary["tables"]["units"] if row["unit_key"] == "lone")
    assert row["counted"] is True and row["ds_category"] == row["human_category"] == "scene"
    assert row["category_match"] is False


def test_the_counts_behind_each_statistic_follow_from_the_units() -> None:
    records = _records(2)
    summary = summarize(records, n_resamples=20)
    support = summary["support"]
    both = [r for r in summary["tables"]["units"] if r["human_category"] and r["auto_human_category"]]
    assert support["cohen_kappa"] == {"units": len(both), "answers": sum(r["answers"] for r in both)}
    assert support["category_agreement"] == support["cohen_kappa"]
    worded = [r for r in summary["tables"]["units"] if r["word_agreement"] is not None]
    assert support["word_agreement"]["units"] == len(worded)
    assert support["fleiss_kappa"] == {"units": 30, "answers": sum(len(r.answers) for r in records)}
    row = summary["tables"]["layers"][0]
    scope = summary["layers"][row["layer"]]
    assert row["cohen_kappa_units"] == scope["support"]["cohen_kappa"]["units"]
    assert row["fleiss_kappa_answers"] == scope["support"]["fleiss_kappa"]["answers"]


def test_kappa_is_explained_when_dissection_uses_one_category() -> None:
    """The issue's case: 86 % agreement beside κ 0.000, because dissection put every unit in one category."""
    records = [
        UnitRecord(
            f"u{i}",
            "conv4",
            "roof",
            "part",
            0.1,
            tuple(Answer(f"w{w}", "roof", "part" if i < 6 else "object") for w in range(2)),
        )
        for i in range(7)
    ]
    summary = summarize(records, n_resamples=20)
    assert summary["category_agreement"] == pytest.approx(6 / 7)
    assert summary["cohen_kappa"] == pytest.approx(0.0)
    assert (
        "Network Dissection puts all 7 units in one category (Object part)"
        in summary["caveats"]["cohen_kappa"]
    )
    assert "κ is 0 whatever the agreement" in summary["caveats"]["cohen_kappa"]
    assert "Cohen's κ says whether that beats chance" in summary["caveats"]["category_agreement"]
    assert "fleiss_kappa" not in summary["caveats"]


def test_degenerate_scopes_say_why() -> None:
    one_worker = [
        UnitRecord(f"u{i}", "conv4", "dog", "object", 0.1, (Answer("w", "dog", ("object", "part")[i % 2]),))
        for i in range(6)
    ]
    summary = summarize(one_worker, n_resamples=20)
    assert summary["units_counted"] == 0 and summary["units_apart"] == 6
    for name in STATISTICS:
        assert summary[name] is None
        assert (
            summary["reasons"][name]
            == "no unit has the minimum of 2 answers yet (6 with fewer are counted apart)"
        )
    alone = summarize(one_worker, n_resamples=20, min_answers=1)
    for name in ("fleiss_kappa", "krippendorff_alpha", "word_agreement"):
        assert (
            alone["reasons"][name] == "only one worker answered: agreement among workers needs at least two"
        )
    assert "one worker answered" in alone["caveats"]["human_category"]
    few = summarize(_records(3, units=3), n_resamples=20)
    assert "rests on 3 units only" in few["caveats"]["cohen_kappa"]
    assert "rests on" not in " ".join(summarize(_records(3), n_resamples=20)["caveats"].values())


def test_minimum_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_answers must be at least 1, got 0"):
        summarize([], min_answers=0)


def test_every_statistic_on_the_page_has_a_one_sentence_definition() -> None:
    for name in (*STATISTICS, "dawid_skene", "majority", "min_answers", "verification", "interval"):
        sentence = DEFINITIONS[name]
        assert ". " not in sentence and len(sentence) > 40, f"{name}: one sentence"
