"""`summarize`: the batch report the dashboard, exports and `manage.py compare` read."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from agreement.aggregation import dawid_skene
from agreement.broden import human_category_of
from agreement.categories import CODES
from agreement.records import ALL_LAYERS, Answer, UnitRecord, VerificationAnswer
from agreement.summary import rows_to_csv, summarize
from agreement.words import synonym_map

REQUIRED = (
    "units",
    "fleiss_kappa",
    "krippendorff_alpha",
    "category_agreement",
    "cohen_kappa",
    "concept_match_rate",
)
HUMAN_TO_BRODEN = {
    "scene": ("scene", "street-s"),
    "region": ("object", "sky"),
    "object": ("object", "dog"),
    "part": ("part", "wheel"),
    "texture": ("material", "wood"),
    "color": ("color", "red-c"),
}
WORD_OF = {
    "scene": "streets",
    "region": "Sky",
    "object": "dogs",
    "part": "wheel",
    "texture": "wood",
    "color": "red",
}


def _dumps(summary: dict) -> str:
    return json.dumps(summary, allow_nan=False)


def _random_records(seed: int, *, units: int = 60, raters: int = 4) -> list[UnitRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(units):
        truth = CODES[int(rng.integers(len(CODES)))]
        answers = []
        for w in range(raters):
            category = truth if rng.random() < 0.7 else CODES[int(rng.integers(len(CODES)))]
            answers.append(Answer(f"w{w}", WORD_OF[category], category, float(rng.integers(0, 21)) / 20))
        shown = truth if rng.random() < 0.6 else CODES[int(rng.integers(len(CODES)))]
        broden, label = HUMAN_TO_BRODEN[shown]
        records.append(
            UnitRecord(
                f"u{i}",
                f"layer{i % 3 + 1}",
                label,
                broden,
                float(rng.random() * 0.1),
                tuple(answers),
                url=f"/review/{i}",
            )
        )
    return records


def _expected(records: list[UnitRecord]) -> dict[str, float]:
    """The headline statistics recomputed with the reference libraries."""
    table, _ = aggregate_raters(
        np.array([[CODES.index(a.category) for a in r.answers] for r in records]), n_cat=6
    )
    ds = dawid_skene([[(a.worker, a.category) for a in r.answers] for r in records])
    automatic = [human_category_of(r.auto_category, r.auto_label) for r in records]
    return {
        "fleiss_kappa": sm_fleiss_kappa(table),
        "cohen_kappa": cohen_kappa_score(ds.labels, automatic, labels=list(CODES)),
        "category_agreement": float(np.mean([h == a for h, a in zip(ds.labels, automatic, strict=True)])),
        "confusion": sk_confusion_matrix(ds.labels, automatic, labels=list(CODES)).tolist(),
    }


def test_summary_matches_reference_libraries_overall_and_per_layer() -> None:
    records = _random_records(0)
    summary = summarize(records, n_resamples=200)
    _dumps(summary)
    for key in REQUIRED:
        assert key in summary
    expected = _expected(records)
    assert summary["units"] == 60
    assert summary["fleiss_kappa"] == pytest.approx(expected["fleiss_kappa"], abs=1e-12)
    assert summary["cohen_kappa"] == pytest.approx(expected["cohen_kappa"], abs=1e-12)
    assert summary["category_agreement"] == pytest.approx(expected["category_agreement"])
    assert summary["confusion_matrix"] == {"labels": list(CODES), "matrix": expected["confusion"]}
    assert list(summary["layers"]) == ["layer1", "layer2", "layer3"]
    ds = dawid_skene([[(a.worker, a.category) for a in r.answers] for r in records])
    for layer, scope in summary["layers"].items():
        subset = [r for r in records if r.layer == layer]
        for key in REQUIRED:
            assert key in scope
        assert scope["units"] == len(subset)
        assert scope["fleiss_kappa"] == pytest.approx(_expected(subset)["fleiss_kappa"], abs=1e-12)
        human = [label for label, r in zip(ds.labels, records, strict=True) if r.layer == layer]
        automatic = [human_category_of(r.auto_category, r.auto_label) for r in subset]
        assert scope["cohen_kappa"] == pytest.approx(
            cohen_kappa_score(human, automatic, labels=list(CODES)), abs=1e-12
        )
        low, high = scope["ci"]["fleiss_kappa"]
        assert low <= high


def test_intervals_bracket_the_estimates_and_are_reproducible() -> None:
    records = _random_records(1, units=90)
    first = summarize(records, n_resamples=300, seed=4)
    assert first == summarize(records, n_resamples=300, seed=4)
    for name in (
        "fleiss_kappa",
        "krippendorff_alpha",
        "category_agreement",
        "cohen_kappa",
        "concept_match_rate",
    ):
        low, high = first["ci"][name]
        assert low - 0.05 <= first[name] <= high + 0.05


def test_concept_match_uses_normalization_synonyms_and_the_iou_split() -> None:
    synonyms = synonym_map([{"name": "person", "syns": "individual;someone"}, {"name": "red-c", "syns": ""}])
    records = [
        UnitRecord(
            "a",
            "conv",
            "person",
            "object",
            0.10,
            (Answer("x", "Individuals", "object"), Answer("y", "someone", "object")),
        ),
        UnitRecord(
            "b", "conv", "red-c", "color", 0.02, (Answer("x", "RED", "color"), Answer("y", "red!", "color"))
        ),
        UnitRecord(
            "c",
            "conv",
            "person",
            "object",
            0.20,
            (Answer("x", "dog", "object"), Answer("y", "dogs", "object")),
        ),
        UnitRecord(
            "d",
            "conv",
            "sky",
            "object",
            0.01,
            (Answer("x", "cloud", "region"), Answer("y", "clouds", "scene")),
        ),
    ]
    summary = summarize(records, synonyms=synonyms, n_resamples=50)
    rows = {row["unit_key"]: row for row in summary["tables"]["units"]}
    assert [rows[k]["concept_match"] for k in "abcd"] == [True, True, False, False]
    assert rows["a"]["consensus_word"] == "person"
    assert summary["concept_match_rate"] == 0.5
    assert summary["concept_match_rate_interpretable"] == 0.5  # a (match), c (no)
    assert summary["concept_match_rate_uninterpretable"] == 0.5  # b (match), d (no)
    assert rows["d"]["auto_human_category"] == "region"
    assert summary["word_agreement"] == pytest.approx((1 + 1 + 1 + 1) / 4)


def test_hand_computed_small_batch() -> None:
    # Two layers; every unit answered by the same three workers.
    records = [
        UnitRecord(
            "1",
            "a",
            "dog",
            "object",
            0.3,
            (
                Answer("p", "dog", "object", 1.0),
                Answer("q", "dog", "object", 0.5),
                Answer("r", "cat", "object", 0.0),
            ),
        ),
        UnitRecord(
            "2",
            "a",
            "sky",
            "object",
            0.2,
            (
                Answer("p", "sky", "region", 1.0),
                Answer("q", "sky", "region", 1.0),
                Answer("r", "sky", "scene", 1.0),
            ),
        ),
        UnitRecord(
            "3",
            "b",
            "red-c",
            "color",
            0.1,
            (
                Answer("p", "red", "color", 0.5),
                Answer("q", "red", "color", 0.5),
                Answer("r", "red", "color", 0.5),
            ),
        ),
    ]
    summary = summarize(records, aggregation="majority", n_resamples=50)
    # counts: [object 3], [region 2, scene 1], [color 3]; P̄ = (1 + 1/3 + 1)/3 = 7/9;
    # p = (1/9 scene, 2/9 region, 3/9 object, 3/9 color), Pe = (1 + 4 + 9 + 9)/81 = 23/81
    # → κ = (63 − 23)/(81 − 23).
    assert summary["fleiss_kappa"] == pytest.approx(40 / 58)
    assert summary["category_agreement"] == 1.0
    assert summary["concept_match_rate"] == 1.0
    assert summary["word_agreement"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert summary["mean_precision"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert summary["layers"]["a"]["units"] == 2
    assert summary["layers"]["b"]["fleiss_kappa"] is None
    assert "same category" in summary["layers"]["b"]["reasons"]["fleiss_kappa"]
    assert summary["ci"]["fleiss_kappa"] is None
    assert "too few units" in summary["reasons"]["fleiss_kappa_ci"]


def test_spearman_in_the_summary_equals_scipy_on_units_with_both_values() -> None:
    records = _random_records(2)
    summary = summarize(records, n_resamples=20)
    rows = summary["tables"]["units"]
    x = [row["iou"] for row in rows if row["mean_precision"] is not None]
    y = [row["mean_precision"] for row in rows if row["mean_precision"] is not None]
    expected = scipy_stats.spearmanr(x, y)
    assert summary["spearman_iou_precision"]["rho"] == pytest.approx(expected.statistic)
    assert summary["spearman_iou_precision"]["n"] == len(x)


def test_disagreements_are_ranked_by_posterior_times_iou() -> None:
    records = _random_records(3)
    summary = summarize(records, n_resamples=20)
    disagreements = summary["tables"]["disagreements"]
    assert disagreements, "the random batch has disagreements"
    confidences = [row["confidence"] for row in disagreements]
    assert confidences == sorted(confidences, reverse=True)
    units = {row["unit_key"]: row for row in summary["tables"]["units"]}
    for row in disagreements:
        unit = units[row["unit_key"]]
        assert row["confidence"] == pytest.approx(unit["ds_posterior"] * unit["iou"])
        assert row["url"].startswith("/review/")
        assert unit["category_match"] is False or unit["concept_match"] is False
    disagreeing = {k for k, u in units.items() if u["category_match"] is False or u["concept_match"] is False}
    assert {row["unit_key"] for row in disagreements} == disagreeing


def test_verification_report_hand_computed() -> None:
    answers = [
        VerificationAnswer("u1", "conv5", "human", "a", True),
        VerificationAnswer("u1", "conv5", "human", "b", True),
        VerificationAnswer("u1", "conv5", "human", "c", False),
        VerificationAnswer("u1", "conv5", "dissection", "a", False),
        VerificationAnswer("u1", "conv5", "dissection", "b", False),
        VerificationAnswer("u1", "conv5", "dissection", "c", True),
        VerificationAnswer("u2", "conv5", "human", "a", True),
        VerificationAnswer("u2", "conv5", "human", "b", False),  # a tie is not a majority
        VerificationAnswer("u2", "conv5", "dissection", "a", True),
        VerificationAnswer("u3", "conv4", "human", "a", True),
    ]
    records = [UnitRecord("u1", "conv5"), UnitRecord("u2", "conv5"), UnitRecord("u3", "conv4")]
    summary = summarize(records, verification=answers, n_resamples=20)
    _dumps(summary)
    conv5 = summary["layers"]["conv5"]["verification"]
    assert conv5["human"] == {
        "units": 2,
        "answers": 5,
        "correct": 1,
        "share": 0.5,
        "ci": pytest.approx(list(proportion_confint(1, 2, method="wilson"))),
        "reason": None,
    }
    assert conv5["dissection"]["share"] == 0.5
    conv4 = summary["layers"]["conv4"]["verification"]
    assert conv4["human"]["share"] == 1.0
    assert conv4["dissection"] == {
        "units": 0,
        "answers": 0,
        "correct": 0,
        "share": None,
        "ci": None,
        "reason": "no verification answers on dissection labels",
    }
    assert summary["verification"]["human"]["units"] == 3
    assert summary["verification"]["human"]["correct"] == 2
    rows = summary["tables"]["verification"]
    assert {(row["layer"], row["source"]) for row in rows} == {
        (layer, source) for layer in ("conv5", "conv4", ALL_LAYERS) for source in ("human", "dissection")
    }
    assert "verification" not in summarize(records, n_resamples=20)


def test_verification_answers_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="verification answer 0: source must be human or dissection"):
        summarize([], verification=[VerificationAnswer("u", "l", "crowd", "a", True)])
    with pytest.raises(ValueError, match="verification answer 1: unit 'u' is in layer 'l'"):
        summarize(
            [],
            verification=[
                VerificationAnswer("u", "l", "human", "a", True),
                VerificationAnswer("u", "m", "human", "b", True),
            ],
        )


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([], id="no units"),
        pytest.param([UnitRecord("u", "conv")], id="one unit, no answers, no dissection"),
        pytest.param(
            [UnitRecord("u", "conv", "dog", "object", 0.1, (Answer("w", "dog", "object", 1.0),))],
            id="one worker",
        ),
        pytest.param(
            [
                UnitRecord(
                    f"u{i}",
                    "conv",
                    "dog",
                    "object",
                    0.1,
                    (Answer("a", "dog", "object"), Answer("b", "dog", "object")),
                )
                for i in range(8)
            ],
            id="all agree",
        ),
        pytest.param(
            [
                UnitRecord(
                    f"u{i}", "conv", None, None, None, (Answer("a", "", None), Answer("b", "  ", None))
                )
                for i in range(3)
            ],
            id="empty answers",
        ),
    ],
)
def test_degenerate_batches_give_json_with_reasons_not_nan(records: list[UnitRecord]) -> None:
    summary = summarize(records, n_resamples=50)
    _dumps(summary)
    for key in REQUIRED:
        assert key in summary
    assert summary["units"] == len(records)
    for name in ("fleiss_kappa", "krippendorff_alpha"):
        assert summary[name] is None
        assert summary["reasons"][name]
    for table in summary["tables"].values():
        rows_to_csv(table)


def test_all_agree_on_one_category_but_dissection_differs() -> None:
    records = [
        UnitRecord(
            f"u{i}",
            "conv",
            "sky",
            "object",
            0.1,
            (Answer("a", "dog", "object"), Answer("b", "dog", "object")),
        )
        for i in range(6)
    ]
    summary = summarize(records, n_resamples=50)
    assert summary["category_agreement"] == 0.0
    assert summary["cohen_kappa"] == pytest.approx(0.0)
    assert summary["concept_match_rate"] == 0.0
    assert summary["word_agreement"] == 1.0


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([UnitRecord("u", "l"), UnitRecord("u", "l")], "unit 'u' appears twice"),
        ([UnitRecord("u", "")], "unit 'u': field 'layer' is empty"),
        ([UnitRecord("u", "l", "dog", "animal")], "unit 'u': field 'auto_category' is 'animal'"),
        ([UnitRecord("u", "l", "dog", None)], "must be given together"),
        ([UnitRecord("u", "l", iou=float("nan"))], "unit 'u': field 'iou' must be a finite number"),
        (
            [UnitRecord("u", "l", answers=(Answer("w", "x", "object"), Answer("w", "y", "object")))],
            "worker 'w' answered twice",
        ),
        (
            [UnitRecord("u", "l", answers=(Answer("w", "x", "animal"),))],
            "unit 'u', worker 'w': field 'category' is 'animal'",
        ),
        ([UnitRecord("u", "l", answers=(Answer("w", "x", "object", 1.5),))], "field 'precision' must be in"),
    ],
)
def test_bad_records_name_the_unit_and_field(records: list[UnitRecord], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        summarize(records)


def test_majority_aggregation_and_bad_settings() -> None:
    records = _random_records(4, units=12)
    summary = summarize(records, aggregation="majority", n_resamples=20)
    assert all(row["human_category"] == row["majority_category"] for row in summary["tables"]["units"])
    assert summary["settings"]["aggregation"] == "majority"
    with pytest.raises(ValueError, match="aggregation must be"):
        summarize(records, aggregation="mean")
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        summarize(records, confidence=95)


def test_tables_are_row_dicts_that_round_trip_through_csv() -> None:
    summary = summarize(_random_records(5, units=15), n_resamples=20)
    assert set(summary["tables"]) == {
        "units",
        "layers",
        "confusion",
        "category_shares",
        "disagreements",
        "workers",
    }
    layers = summary["tables"]["layers"]
    assert [row["layer"] for row in layers] == ["layer1", "layer2", "layer3", ALL_LAYERS]
    assert layers[-1]["fleiss_kappa"] == summary["fleiss_kappa"]
    confusion = [row for row in summary["tables"]["confusion"] if row["layer"] == ALL_LAYERS]
    assert [[row[code] for code in CODES] for row in confusion] == summary["confusion_matrix"]["matrix"]
    shares = [
        row
        for row in summary["tables"]["category_shares"]
        if row["layer"] == ALL_LAYERS and row["source"] == "human"
    ]
    assert sum(shares[0][code] for code in CODES) == pytest.approx(1.0)
    text = rows_to_csv(summary["tables"]["units"])
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 15
    assert parsed[0]["unit_key"] == "u0"
    assert rows_to_csv([]) == ""
    assert rows_to_csv([], columns=["unit_key", "layer"]) == "unit_key,layer\n"
