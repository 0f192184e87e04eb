"""Aggregating one unit's answers: votes, Dawid–Skene, normalized consensus words, Broden categories."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from agreement.aggregation import (
    agreement_share,
    consensus_word,
    dawid_skene,
    image_precision,
    majority_vote,
    mean_precision,
)
from agreement.broden import STUFF_LABELS, human_category_of
from agreement.categories import CODES
from agreement.words import (
    canonical_word,
    dissection_word,
    normalize_word,
    synonym_map,
    synonyms_from_label_csv,
)

LABEL_ROWS = [
    {
        "number": "1",
        "name": "person",
        "category": "object(12)",
        "frequency": "9",
        "coverage": "1.0",
        "syns": "individual;someone;somebody",
    },
    {
        "number": "2",
        "name": "red-c",
        "category": "color(40)",
        "frequency": "9",
        "coverage": "1.0",
        "syns": "",
    },
    {
        "number": "3",
        "name": "street-s",
        "category": "scene(3)",
        "frequency": "9",
        "coverage": "1.0",
        "syns": "Streets;avenue",
    },
    {
        "number": "4",
        "name": "car",
        "category": "object(5)",
        "frequency": "9",
        "coverage": "1.0",
        "syns": "auto;automobile;person",
    },
]


def test_normalize_word_lowercases_strips_punctuation_collapses_space_and_lemmatizes() -> None:
    assert normalize_word("  Red   Cars!! ") == "red car"
    assert normalize_word("dogs") == "dog"
    assert normalize_word("Skies") == "sky"
    assert normalize_word("t-shirt") == "t shirt"
    assert normalize_word("cat's toys") == "cat toy"
    assert normalize_word("children") == "child"
    assert normalize_word("...") == ""


def test_dissection_word_drops_broden_suffixes() -> None:
    assert dissection_word("red-c") == "red"
    assert dissection_word("street-s") == "street"
    assert dissection_word("chest-of-drawers") == "chest of drawer"


def test_synonym_map_maps_names_and_synonyms_to_the_label_name() -> None:
    synonyms = synonym_map(LABEL_ROWS)
    assert synonyms["individual"] == "person"
    assert synonyms["somebody"] == "person"
    assert synonyms["red"] == "red"
    assert synonyms["avenue"] == "street"
    assert synonyms["street"] == "street"
    assert synonyms["automobile"] == "car"
    assert synonyms["person"] == "person", "a label's own name wins over another label's synonym"
    assert canonical_word("Individuals", synonyms) == "person"
    assert canonical_word("zebra", synonyms) == "zebra"


def test_synonym_map_names_the_bad_row() -> None:
    with pytest.raises(ValueError, match=re.escape("label.csv: row 3: field 'name' is empty")):
        synonym_map([LABEL_ROWS[0], {"number": "2", "name": " ", "syns": ""}])


def test_synonyms_from_label_csv_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "label.csv"
    lines = ["number,name,category,frequency,coverage,syns"]
    lines += [
        ",".join(row[key] for key in ("number", "name", "category", "frequency", "coverage", "syns"))
        for row in LABEL_ROWS
    ]
    path.write_text("\n".join(lines) + "\n")
    assert synonyms_from_label_csv(path) == synonym_map(LABEL_ROWS)
    bad = tmp_path / "bad.csv"
    bad.write_text("number,label\n1,x\n")
    with pytest.raises(ValueError, match=re.escape("bad.csv: no 'name' column")):
        synonyms_from_label_csv(bad)


def test_majority_vote_breaks_ties_by_category_order_not_answer_order() -> None:
    assert majority_vote(["color", "scene", "color"]) == "color"
    assert majority_vote(["color", "scene"]) == "scene"
    assert majority_vote(["scene", "color"]) == "scene"
    assert majority_vote(["texture", "part", None, None]) == "part"
    assert majority_vote([None]) is None
    assert majority_vote([]) is None
    with pytest.raises(ValueError, match="unknown categories"):
        majority_vote(["animal"])


def test_consensus_word_normalizes_then_breaks_ties_alphabetically() -> None:
    synonyms = synonym_map(LABEL_ROWS)
    assert consensus_word(["Dogs", "dog ", "cat"]) == "dog"
    assert consensus_word(["zebra", "cat"]) == "cat"
    assert consensus_word(["someone", "Individual", "car"], synonyms=synonyms) == "person"
    assert consensus_word(["", "  ", "!"]) is None


def test_agreement_share_needs_two_answers() -> None:
    assert agreement_share(["dog", "dog", "cat"], "dog") == pytest.approx(2 / 3)
    assert agreement_share(["dog"], "dog") is None
    assert agreement_share(["dog", None], "dog") is None
    assert agreement_share([], None) is None


def test_precision_is_kept_over_shown() -> None:
    assert image_precision(shown=20, rejected=5) == 0.75
    assert mean_precision([0.5, None, 1.0]) == 0.75
    assert mean_precision([None]) is None
    with pytest.raises(ValueError, match="shown must be positive"):
        image_precision(shown=0, rejected=0)
    with pytest.raises(ValueError, match="rejected must be between 0 and shown"):
        image_precision(shown=3, rejected=4)


@pytest.mark.parametrize(
    ("broden", "label", "human"),
    [
        ("color", "red-c", "color"),
        ("texture", "striped", "texture"),
        ("material", "wood", "texture"),
        ("part", "wheel", "part"),
        ("scene", "street-s", "scene"),
        ("object", "dog", "object"),
        ("object", "sky", "region"),
        ("object", "floor", "region"),
        ("object", "Fields", "region"),
    ],
)
def test_broden_categories_map_onto_the_six_human_ones(broden: str, label: str, human: str) -> None:
    assert human_category_of(broden, label) == human


def test_stuff_labels_cover_the_issue_list_and_unknown_categories_are_rejected() -> None:
    assert {"sky", "road", "grass", "floor", "wall", "ceiling", "water", "field"} <= STUFF_LABELS
    with pytest.raises(ValueError, match="unknown Broden category 'animal'"):
        human_category_of("animal", "dog")


def _dawid_skene_by_definition(answers, *, smoothing=0.01, diagonal=1.0, tol=1e-6, max_iter=200):
    """The same EM written with dicts and loops, one formula per line."""
    K = len(CODES)
    workers = sorted({w for unit in answers for w, c in unit if c is not None})
    answered = [any(c is not None for _, c in unit) for unit in answers]
    post = []
    for unit in answers:
        votes = [CODES.index(c) for _, c in unit if c is not None]
        post.append([votes.count(k) / len(votes) if votes else 0.0 for k in range(K)])
    priors = [1 / K] * K
    conf = {}
    for _ in range(max_iter):
        mass = [sum(post[i][k] for i in range(len(answers)) if answered[i]) + smoothing for k in range(K)]
        priors = [m / sum(mass) for m in mass]
        conf = {}
        for w in workers:
            table = [[smoothing + (diagonal if k == j else 0.0) for j in range(K)] for k in range(K)]
            for i, unit in enumerate(answers):
                for worker, c in unit:
                    if worker == w and c is not None:
                        for k in range(K):
                            table[k][CODES.index(c)] += post[i][k]
            conf[w] = [[cell / sum(row) for cell in row] for row in table]
        new = []
        for i, unit in enumerate(answers):
            if not answered[i]:
                new.append(list(priors))
                continue
            logs = [
                math.log(priors[k])
                + sum(math.log(conf[w][k][CODES.index(c)]) for w, c in unit if c is not None)
                for k in range(K)
            ]
            top = max(logs)
            weights = [math.exp(v - top) for v in logs]
            new.append([v / sum(weights) for v in weights])
        delta = (
            max(abs(a - b) for row, old in zip(new, post, strict=True) for a, b in zip(row, old, strict=True))
            if answers
            else 0.0
        )
        post = new
        if delta < tol:
            break
    return np.array(post), np.array(priors), {w: np.array(m) for w, m in conf.items()}


def _random_answers(seed: int, units: int = 25, workers: int = 5):
    rng = np.random.default_rng(seed)
    answers = []
    for _ in range(units):
        truth = int(rng.integers(4))
        row = []
        for w in range(workers):
            if rng.random() < 0.3:
                continue
            k = truth if rng.random() < 0.7 - 0.1 * w else int(rng.integers(4))
            row.append((f"w{w}", CODES[k] if rng.random() > 0.05 else None))
        answers.append(row)
    answers.append([])
    return answers


@pytest.mark.parametrize("seed", range(4))
def test_dawid_skene_equals_the_loop_definition(seed: int) -> None:
    answers = _random_answers(seed)
    result = dawid_skene(answers)
    posteriors, priors, confusion = _dawid_skene_by_definition(answers)
    np.testing.assert_allclose(result.posteriors, posteriors, atol=1e-9)
    np.testing.assert_allclose(result.priors, priors, atol=1e-9)
    for worker, matrix in confusion.items():
        np.testing.assert_allclose(result.worker_confusion[worker], matrix, atol=1e-9)
    answered = [any(c is not None for _, c in unit) for unit in answers]
    assert not answered[-1]
    assert result.labels == [
        CODES[int(k)] if a else None for k, a in zip(posteriors.argmax(1), answered, strict=True)
    ]


def test_dawid_skene_never_used_categories_give_finite_rows_and_unanimity_wins() -> None:
    answers = [[("a", "scene"), ("b", "scene")], [("a", "color"), ("b", "color")], [("a", "scene")]]
    result = dawid_skene(answers)
    assert result.labels == ["scene", "color", "scene"]
    assert result.converged
    for matrix in result.worker_confusion.values():
        assert np.isfinite(matrix).all()
        np.testing.assert_allclose(matrix.sum(1), 1.0)
        part = CODES.index("part")
        prior_row = (0.01 + np.eye(6)[part]) / (6 * 0.01 + 1.0)
        np.testing.assert_allclose(matrix[part], prior_row, atol=1e-3)
    assert np.isfinite(result.posteriors).all() and np.isfinite(result.priors).all()


def test_dawid_skene_with_no_answers_at_all() -> None:
    result = dawid_skene([[], []])
    assert result.labels == [None, None]
    np.testing.assert_allclose(result.posteriors, 1 / 6)
    assert dawid_skene([]).labels == []


def test_dawid_skene_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unit 1: unknown category 'animal'"):
        dawid_skene([[("a", "scene")], [("a", "animal")]])
    with pytest.raises(ValueError, match="smoothing must be positive"):
        dawid_skene([], smoothing=0)
