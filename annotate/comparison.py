"""Human versus automatic labels: aggregation, agreement and verification statistics on plain records.

No Django here: the services build `UnitRecord`s and `VerificationAnswer`s from the ORM and call
`summarize`, which returns a JSON-ready dict (the dashboard, the CSV/JSON exports and `manage.py compare`
all read it). Every statistic is a small function on lists or NumPy arrays so that the tests can hold it
against a reference library and a slow implementation written from the definition.

Undefined statistics (kappa when every answer has one category, alpha without a unit rated twice, an
interval over too few units…) raise `UndefinedStatistic`, a `ValueError` whose message says why;
`summarize` turns each into `None` plus that message under `reasons`, so no NaN ever reaches JSON.
"""
from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lemminflect import getLemma
from scipy import stats

from annotate.categories import CODES, COLOR, OBJECT, PART, REGION, SCENE, TEXTURE

ALL_LAYERS = "(all)"
"""The `layer` value of table rows that cover every layer (no PyTorch module name has parentheses)."""

DEFAULT_IOU_THRESHOLD = 0.04
MIN_BOOTSTRAP_UNITS = 5
"""Fewer units than this give no bootstrap interval: resampling two or three units says nothing."""
MIN_DEFINED_RESAMPLES = 0.9
"""Share of bootstrap resamples on which the statistic must be defined for the interval to be reported."""

BRODEN_CATEGORIES: tuple[str, ...] = ("color", "object", "part", "material", "scene", "texture")
BRODEN_TO_HUMAN: dict[str, str] = {
    "color": COLOR,
    "texture": TEXTURE,
    "material": TEXTURE,
    "part": PART,
    "scene": SCENE,
    "object": OBJECT,
}
STUFF_LABELS: frozenset[str] = frozenset({
    "sky", "road", "grass", "floor", "wall", "ceiling", "water", "field", "ground", "earth", "sand",
    "snow", "sea", "river", "lake", "mountain", "hill", "sidewalk", "path", "pavement", "runway",
    "dirt track",
})
"""Broden `object` labels that people call a region or surface rather than an object."""

SOURCES: tuple[str, ...] = ("human", "dissection")
_BRODEN_SUFFIX = re.compile(r"-[cs]$")
_APOSTROPHES = re.compile(r"['\u2019]")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


class UndefinedStatistic(ValueError):
    """A statistic that has no value on these data; the message says why (it becomes a `reason`)."""


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Answer:
    """One worker's answer on one unit: the words typed, the category picked, the share of images kept.

    `category` is a `categories.CODES` code or None (not answered); `precision` is kept / shown in
    [0, 1] or None (see `image_precision`).
    """

    worker: str
    words: str
    category: str | None
    precision: float | None = None


@dataclass(frozen=True)
class UnitRecord:
    """One unit with its dissection result (all None when the unit was not dissected) and its answers.

    `auto_category` is the Broden category of the dissection label (one of `BRODEN_CATEGORIES`); `url`
    is the unit's review page, copied into the disagreement table.
    """

    unit_key: str
    layer: str
    auto_label: str | None = None
    auto_category: str | None = None
    iou: float | None = None
    answers: tuple[Answer, ...] = ()
    url: str | None = None


@dataclass(frozen=True)
class VerificationAnswer:
    """A yes/no judgement of one candidate label of a unit in a blind verification task."""

    unit_key: str
    layer: str
    source: Literal["human", "dissection"]
    worker: str
    yes: bool


@dataclass(frozen=True)
class DawidSkeneResult:
    """Dawid–Skene estimates; rows and columns follow `classes`.

    `posteriors[i]` is P(true class | answers) for unit i (the priors for a unit without answers, whose
    label is None); `worker_confusion[w][k, l]` is P(worker w answers l | true class k).
    """

    classes: tuple[str, ...]
    posteriors: np.ndarray
    labels: list[str | None]
    worker_confusion: dict[str, np.ndarray]
    priors: np.ndarray
    iterations: int
    converged: bool


# -------------------------------------------------------------------------------------- normalization


@lru_cache(maxsize=65536)
def _lemma(token: str) -> str:
    lemmas = getLemma(token, upos="NOUN")
    return lemmas[0] if lemmas else token


def normalize_word(text: str) -> str:
    """Lowercase, drop apostrophes, turn other punctuation into spaces, collapse whitespace, lemmatize.

    Each token is lemmatized as a noun with lemminflect (offline; its first lemma is kept), so "Red
    Cars!" and "red car" are the same answer.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCTUATION.sub(" ", _APOSTROPHES.sub("", text))
    return " ".join(_lemma(token) for token in text.split())


def dissection_word(label: str) -> str:
    """A dissection label as a normalized word: Broden's `-c` (colour) and `-s` (scene) suffixes dropped."""
    return normalize_word(_BRODEN_SUFFIX.sub("", label.strip()))


def canonical_word(word: str, synonyms: Mapping[str, str] | None = None) -> str:
    """The normalized word, replaced by its label's name when it is a known synonym."""
    normalized = normalize_word(word)
    return synonyms.get(normalized, normalized) if synonyms else normalized


def synonym_map(rows: Iterable[Mapping[str, str]], *, source: str = "label.csv") -> dict[str, str]:
    """Map every normalized name and synonym of a probe set's label.csv rows to its label's normalized name.

    Rows are label.csv's (`number,name,category,frequency,coverage,syns`, syns `;`-separated), e.g. from
    `csv.DictReader`. A label's own name always maps to itself; a synonym shared by several labels maps
    to the first row's label.
    """
    names: list[tuple[str, list[str]]] = []
    for line, row in enumerate(rows, start=2):
        name = (row.get("name") or "").strip()
        if not name:
            raise ValueError(f"{source}: row {line}: field 'name' is empty")
        syns = [syn for syn in (row.get("syns") or "").split(";") if syn.strip()]
        names.append((dissection_word(name), syns))
    mapping = {canonical: canonical for canonical, _ in names if canonical}
    for canonical, syns in names:
        for syn in syns:
            mapping.setdefault(dissection_word(syn), canonical)
    mapping.pop("", None)
    return mapping


def synonyms_from_label_csv(path: str | Path) -> dict[str, str]:
    """`synonym_map` of a label.csv file."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "name" not in reader.fieldnames:
            raise ValueError(f"{path}: no 'name' column in the header")
        return synonym_map(reader, source=str(path))


def human_category_of(broden_category: str, label: str) -> str:
    """Map a Broden category (and the label, for stuff) onto one of the six human categories."""
    try:
        human = BRODEN_TO_HUMAN[broden_category]
    except KeyError:
        raise ValueError(
            f"unknown Broden category {broden_category!r}; expected one of {', '.join(BRODEN_CATEGORIES)}"
        ) from None
    if human == OBJECT and dissection_word(label) in _stuff_words():
        return REGION
    return human


@lru_cache(maxsize=1)
def _stuff_words() -> frozenset[str]:
    return frozenset(normalize_word(label) for label in STUFF_LABELS)


# ---------------------------------------------------------------------------------------- aggregation


def image_precision(*, shown: int, rejected: int) -> float:
    """Share of a unit's images a worker kept: (shown − rejected) / shown (clicked images are rejected)."""
    if shown <= 0:
        raise ValueError(f"shown must be positive, got {shown}")
    if not 0 <= rejected <= shown:
        raise ValueError(f"rejected must be between 0 and shown ({shown}), got {rejected}")
    return (shown - rejected) / shown


def majority_vote(categories: Iterable[str | None], *, classes: Sequence[str] = CODES) -> str | None:
    """The most frequent category; ties go to the class listed first in `classes` (CODES order).

    Tie-breaking by a fixed class order, not by answer order, makes the result independent of the order
    in which answers arrived. None when nothing was answered.
    """
    counts = Counter(category for category in categories if category is not None)
    if not counts:
        return None
    unknown = set(counts) - set(classes)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; expected one of {', '.join(classes)}")
    return max(classes, key=lambda code: (counts[code], -classes.index(code)))


def consensus_word(words: Iterable[str], *, synonyms: Mapping[str, str] | None = None) -> str | None:
    """The most frequent canonical word (`canonical_word`); ties go to the alphabetically first.

    Empty answers are ignored; None when no word was given.
    """
    return _most_common([canonical_word(word, synonyms) for word in words])


def _most_common(words: Iterable[str]) -> str | None:
    counts = Counter(word for word in words if word)
    if not counts:
        return None
    return min(counts, key=lambda word: (-counts[word], word))


def agreement_share(values: Sequence[str | None], consensus: str | None) -> float | None:
    """Share of the given values equal to the consensus; None with fewer than two values (no agreement
    among workers can be seen in a single answer)."""
    given = [value for value in values if value is not None]
    if consensus is None or len(given) < 2:
        return None
    return sum(value == consensus for value in given) / len(given)


def mean_precision(precisions: Iterable[float | None]) -> float | None:
    """Mean of the workers' image precisions (kept / shown); None when no worker gave one."""
    given = [p for p in precisions if p is not None]
    return sum(given) / len(given) if given else None


def dawid_skene(
    answers: Sequence[Sequence[tuple[str, str | None]]],
    *,
    classes: Sequence[str] = CODES,
    smoothing: float = 0.01,
    diagonal: float = 1.0,
    tol: float = 1e-6,
    max_iter: int = 1000,
) -> DawidSkeneResult:
    """Dawid & Skene (1979) EM: each worker has a confusion matrix, each unit a posterior over classes.

    `answers[i]` lists unit i's (worker, category) pairs; a None category is skipped. The posteriors
    start at each unit's vote shares (their argmax is the majority vote). The M-step adds `smoothing`
    pseudo-counts to every confusion cell and prior, so a class never answered (or never true) gives a
    uniform row instead of 0/0, and `diagonal` more to each confusion matrix's diagonal (a Dirichlet
    prior that workers beat chance): without it EM drifts to degenerate solutions on a few answers,
    e.g. relabelling a unit that one worker answered; with hundreds of answers per worker it is
    negligible. Iterates until no posterior moves by `tol` or after `max_iter` rounds.
    """
    classes = tuple(classes)
    if smoothing <= 0:
        raise ValueError(f"smoothing must be positive, got {smoothing}")
    if diagonal < 0:
        raise ValueError(f"diagonal must be ≥ 0, got {diagonal}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    index = {code: k for k, code in enumerate(classes)}
    workers: dict[str, int] = {}
    rows: list[tuple[int, int, int]] = []
    for unit, pairs in enumerate(answers):
        for worker, category in pairs:
            if category is None:
                continue
            if category not in index:
                raise ValueError(f"unit {unit}: unknown category {category!r}; expected one of {', '.join(classes)}")
            rows.append((unit, workers.setdefault(worker, len(workers)), index[category]))
    n_units, n_classes, n_workers = len(answers), len(classes), len(workers)
    triples = np.array(rows, dtype=np.intp).reshape(-1, 3)
    unit_of, worker_of, label_of = triples[:, 0], triples[:, 1], triples[:, 2]
    answered = np.bincount(unit_of, minlength=n_units) > 0

    posteriors = np.zeros((n_units, n_classes))
    np.add.at(posteriors, (unit_of, label_of), 1.0)
    posteriors[answered] /= posteriors[answered].sum(1, keepdims=True)
    priors = np.full(n_classes, 1.0 / n_classes)
    confusion = np.full((n_workers, n_classes, n_classes), 1.0 / n_classes)
    converged, iterations = False, 0
    for iterations in range(1, max_iter + 1):
        priors = posteriors[answered].sum(0) + smoothing
        priors /= priors.sum()
        counts = np.zeros((n_workers, n_classes, n_classes))
        np.add.at(counts, (worker_of, slice(None), label_of), posteriors[unit_of])
        counts += smoothing + diagonal * np.eye(n_classes)
        confusion = counts / counts.sum(2, keepdims=True)
        log_post = np.tile(np.log(priors), (n_units, 1))
        np.add.at(log_post, unit_of, np.log(confusion[worker_of, :, label_of]))
        log_post -= log_post.max(1, keepdims=True)
        updated = np.exp(log_post)
        updated /= updated.sum(1, keepdims=True)
        updated[~answered] = priors
        delta = float(np.abs(updated - posteriors).max()) if n_units else 0.0
        posteriors = updated
        if delta < tol:
            converged = True
            break
    labels = [classes[int(k)] if answered[i] else None for i, k in enumerate(posteriors.argmax(1))]
    return DawidSkeneResult(
        classes=classes,
        posteriors=posteriors,
        labels=labels,
        worker_confusion={worker: confusion[w] for worker, w in workers.items()},
        priors=priors,
        iterations=iterations,
        converged=converged,
    )


# ------------------------------------------------------------------------------------------ agreement


def category_counts(per_unit: Iterable[Iterable[str | None]], *, classes: Sequence[str] = CODES) -> np.ndarray:
    """Units × classes matrix of how many workers picked each class (None answers are missing values)."""
    index = {code: k for k, code in enumerate(classes)}
    rows = []
    for unit, categories in enumerate(per_unit):
        row = np.zeros(len(classes), dtype=np.int64)
        for category in categories:
            if category is None:
                continue
            if category not in index:
                raise ValueError(f"unit {unit}: unknown category {category!r}; expected one of {', '.join(classes)}")
            row[index[category]] += 1
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(-1, len(classes))


def _pairable(counts: np.ndarray, statistic: str) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(counts, dtype=np.int64)
    raters = counts.sum(1)
    keep = raters >= 2
    if not keep.any():
        raise UndefinedStatistic(f"{statistic} needs a unit with at least two answers")
    return counts[keep], raters[keep]


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from a units × categories count matrix; units with fewer than two answers are left out.

    With unequal numbers of raters each unit's observed agreement uses its own count n_i,
    P_i = (Σ_j n_ij² − n_i) / (n_i (n_i − 1)), and p_j pools all answers; with equal counts this is
    exactly Fleiss (1971). Undefined when every answer has the same category (chance agreement 1).
    """
    counts, raters = _pairable(counts, "Fleiss' kappa")
    totals = counts.sum(0)
    if np.count_nonzero(totals) < 2:
        raise UndefinedStatistic("Fleiss' kappa is undefined: every answer has the same category")
    observed = float((((counts * counts).sum(1) - raters) / (raters * (raters - 1))).mean())
    chance = float(((totals / totals.sum()) ** 2).sum())
    return (observed - chance) / (1.0 - chance)


def krippendorff_alpha(counts: np.ndarray) -> float:
    """Krippendorff's alpha (nominal) from a units × categories count matrix; missing answers allowed.

    alpha = 1 − (n − 1) Σ_u (m_u² − Σ_c n_uc²) / (m_u − 1) / (n² − Σ_c n_c²), over the pairable units
    (m_u ≥ 2 answers), n = Σ m_u. Undefined when they use a single category (no expected disagreement).
    """
    counts, raters = _pairable(counts, "Krippendorff's alpha")
    totals = counts.sum(0)
    if np.count_nonzero(totals) < 2:
        raise UndefinedStatistic("Krippendorff's alpha is undefined: every answer has the same category")
    n = float(totals.sum())
    observed = float(((raters * raters - (counts * counts).sum(1)) / (raters - 1)).sum())
    expected = n * n - float((totals * totals).sum())
    return 1.0 - (n - 1.0) * observed / expected


def confusion_matrix(
    human: Sequence[str], automatic: Sequence[str], *, classes: Sequence[str] = CODES
) -> np.ndarray:
    """classes × classes counts: rows the human category, columns the automatic one (CODES order)."""
    if len(human) != len(automatic):
        raise ValueError(f"{len(human)} human categories but {len(automatic)} automatic ones")
    index = {code: k for k, code in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for position, (h, a) in enumerate(zip(human, automatic)):
        if h not in index or a not in index:
            raise ValueError(
                f"pair {position}: unknown category in ({h!r}, {a!r}); expected one of {', '.join(classes)}"
            )
        matrix[index[h], index[a]] += 1
    return matrix


def cohen_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa of a square confusion matrix; undefined without pairs or when chance agreement is 1."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.sum()
    if n == 0:
        raise UndefinedStatistic("Cohen's kappa needs at least one unit with both a human and an automatic category")
    observed = np.trace(matrix) / n
    chance = float((matrix.sum(1) * matrix.sum(0)).sum() / (n * n))
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
    statistic: Callable[[np.ndarray], float],
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


# --------------------------------------------------------------------------------------- verification


def verification_report(
    answers: Sequence[VerificationAnswer], *, confidence: float = 0.95
) -> dict[str, Any]:
    """Per layer (and `ALL_LAYERS`), the share of units whose human and whose dissection label were
    judged correct — by a strict majority of yes answers on the unit (a tie is not correct) — with
    Wilson intervals. Returns {layer: {source: {units, correct, share, ci, reason}}}.
    """
    votes: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    layer_of: dict[str, str] = {}
    for position, answer in enumerate(answers):
        if answer.source not in SOURCES:
            raise ValueError(
                f"verification answer {position}: source must be human or dissection, got {answer.source!r}"
            )
        if layer_of.setdefault(answer.unit_key, answer.layer) != answer.layer:
            raise ValueError(
                f"verification answer {position}: unit {answer.unit_key!r} is in layer {layer_of[answer.unit_key]!r}, "
                f"not {answer.layer!r}"
            )
        votes[(answer.layer, answer.unit_key, answer.source)].append(bool(answer.yes))
    layers = list(dict.fromkeys(layer_of.values()))
    report: dict[str, Any] = {}
    for layer in [*layers, ALL_LAYERS]:
        report[layer] = {}
        for source in SOURCES:
            judged = [
                2 * sum(yes) > len(yes)
                for (unit_layer, _, unit_source), yes in votes.items()
                if unit_source == source and (layer == ALL_LAYERS or unit_layer == layer)
            ]
            entry: dict[str, Any] = {
                "units": len(judged), "correct": sum(judged), "share": None, "ci": None, "reason": None,
            }
            if judged:
                entry["share"] = sum(judged) / len(judged)
                entry["ci"] = list(wilson_interval(sum(judged), len(judged), confidence=confidence))
            else:
                entry["reason"] = f"no verification answers on {source} labels"
            report[layer][source] = entry
    return report


# ------------------------------------------------------------------------------------------- summary


@dataclass
class _Units:
    """Per-unit arrays that every scope statistic (and every bootstrap resample) indexes."""

    counts: np.ndarray
    human: np.ndarray
    automatic: np.ndarray
    match: np.ndarray
    word_agreement: np.ndarray
    precision: np.ndarray
    iou: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)


def _validate(records: Sequence[UnitRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        unit = f"unit {record.unit_key!r}"
        if record.unit_key in seen:
            raise ValueError(f"{unit} appears twice")
        seen.add(record.unit_key)
        if not record.layer:
            raise ValueError(f"{unit}: field 'layer' is empty")
        if record.auto_category is not None and record.auto_category not in BRODEN_CATEGORIES:
            raise ValueError(
                f"{unit}: field 'auto_category' is {record.auto_category!r}; "
                f"expected one of {', '.join(BRODEN_CATEGORIES)}"
            )
        if (record.auto_label is None) != (record.auto_category is None):
            raise ValueError(f"{unit}: 'auto_label' and 'auto_category' must be given together")
        if record.iou is not None and not (math.isfinite(record.iou) and record.iou >= 0):
            raise ValueError(f"{unit}: field 'iou' must be a finite number ≥ 0, got {record.iou!r}")
        workers: set[str] = set()
        for answer in record.answers:
            if answer.worker in workers:
                raise ValueError(f"{unit}: worker {answer.worker!r} answered twice")
            workers.add(answer.worker)
            if answer.category is not None and answer.category not in CODES:
                raise ValueError(
                    f"{unit}, worker {answer.worker!r}: field 'category' is {answer.category!r}; "
                    f"expected one of {', '.join(CODES)}"
                )
            if answer.precision is not None and not (0.0 <= answer.precision <= 1.0):
                raise ValueError(
                    f"{unit}, worker {answer.worker!r}: field 'precision' must be in [0, 1], got {answer.precision!r}"
                )


def _build_units(
    records: list[UnitRecord],
    *,
    synonyms: Mapping[str, str] | None,
    aggregation: str,
    iou_threshold: float,
    dawid_skene_options: Mapping[str, Any],
) -> tuple[_Units, DawidSkeneResult]:
    index = {code: k for k, code in enumerate(CODES)}
    counts = category_counts([answer.category for answer in record.answers] for record in records)
    ds = dawid_skene(
        [[(answer.worker, answer.category) for answer in record.answers] for record in records],
        **dawid_skene_options,
    )
    n = len(records)
    units = _Units(
        counts=counts,
        human=np.full(n, -1),
        automatic=np.full(n, -1),
        match=np.full(n, -1),
        word_agreement=np.full(n, np.nan),
        precision=np.full(n, np.nan),
        iou=np.full(n, np.nan),
    )
    for i, record in enumerate(records):
        categories = [answer.category for answer in record.answers]
        given = [category for category in categories if category is not None]
        majority = majority_vote(given)
        majority_share = given.count(majority) / len(given) if majority else None
        ds_label = ds.labels[i]
        ds_posterior = float(ds.posteriors[i, index[ds_label]]) if ds_label else None
        human, confidence = (ds_label, ds_posterior) if aggregation == "dawid_skene" else (majority, majority_share)
        words = [word for word in (canonical_word(answer.words, synonyms) for answer in record.answers) if word]
        consensus = _most_common(words)
        word_share = agreement_share(words, consensus)
        precision = mean_precision(answer.precision for answer in record.answers)
        automatic = (
            human_category_of(record.auto_category, record.auto_label)
            if record.auto_category is not None and record.auto_label is not None
            else None
        )
        auto_word = None
        if record.auto_label is not None:
            auto_word = dissection_word(record.auto_label)
            auto_word = synonyms.get(auto_word, auto_word) if synonyms else auto_word
        match = consensus == auto_word if consensus is not None and auto_word is not None else None
        interpretable = record.iou > iou_threshold if record.iou is not None else None
        if human is not None:
            units.human[i] = index[human]
        if automatic is not None:
            units.automatic[i] = index[automatic]
        if match is not None:
            units.match[i] = int(match)
        if word_share is not None:
            units.word_agreement[i] = word_share
        if precision is not None:
            units.precision[i] = precision
        if record.iou is not None:
            units.iou[i] = record.iou
        units.rows.append({
            "unit_key": record.unit_key,
            "layer": record.layer,
            "answers": len(record.answers),
            "consensus_word": consensus,
            "word_agreement": word_share,
            "majority_category": majority,
            "majority_share": majority_share,
            "ds_category": ds_label,
            "ds_posterior": ds_posterior,
            "human_category": human,
            "human_confidence": confidence,
            "mean_precision": precision,
            "auto_label": record.auto_label,
            "auto_category": record.auto_category,
            "auto_human_category": automatic,
            "iou": record.iou,
            "interpretable": interpretable,
            "category_match": None if human is None or automatic is None else human == automatic,
            "concept_match": match,
            "url": record.url,
        })
    return units, ds


def _category_agreement(units: _Units, idx: np.ndarray) -> float:
    human, automatic = units.human[idx], units.automatic[idx]
    both = (human >= 0) & (automatic >= 0)
    if not both.any():
        raise UndefinedStatistic("no unit has both a human and an automatic category")
    return float((human[both] == automatic[both]).mean())


def _confusion(units: _Units, idx: np.ndarray) -> np.ndarray:
    human, automatic = units.human[idx], units.automatic[idx]
    both = (human >= 0) & (automatic >= 0)
    matrix = np.zeros((len(CODES), len(CODES)), dtype=np.int64)
    np.add.at(matrix, (human[both], automatic[both]), 1)
    return matrix


def _share(values: np.ndarray, what: str) -> float:
    if values.size == 0:
        raise UndefinedStatistic(f"no unit has {what}")
    return float(values.mean())


def _concept_match(units: _Units, idx: np.ndarray) -> float:
    match = units.match[idx]
    return _share(match[match >= 0], "both a consensus word and a dissection label")


def _word_agreement(units: _Units, idx: np.ndarray) -> float:
    values = units.word_agreement[idx]
    return _share(values[~np.isnan(values)], "words from at least two workers")


def _mean_precision(units: _Units, idx: np.ndarray) -> float:
    values = units.precision[idx]
    return _share(values[~np.isnan(values)], "image precision from a worker")


_METRICS: dict[str, Callable[[_Units, np.ndarray], float]] = {
    "fleiss_kappa": lambda units, idx: fleiss_kappa(units.counts[idx]),
    "krippendorff_alpha": lambda units, idx: krippendorff_alpha(units.counts[idx]),
    "word_agreement": _word_agreement,
    "category_agreement": _category_agreement,
    "cohen_kappa": lambda units, idx: cohen_kappa(_confusion(units, idx)),
    "concept_match_rate": _concept_match,
    "mean_precision": _mean_precision,
}


def _scope(
    units: _Units, idx: np.ndarray, *, iou_threshold: float, n_resamples: int, confidence: float, seed: int
) -> dict[str, Any]:
    """Every statistic of one scope (a layer or all units), with intervals and the reasons for Nones."""
    result: dict[str, Any] = {"units": int(idx.size)}
    intervals: dict[str, list[float] | None] = {}
    reasons: dict[str, str] = {}
    for name, metric in _METRICS.items():
        try:
            result[name] = metric(units, idx)
        except UndefinedStatistic as error:
            result[name], intervals[name], reasons[name] = None, None, str(error)
            continue
        try:
            intervals[name] = list(bootstrap_ci(
                idx.size, lambda draw: metric(units, idx[draw]),
                n_resamples=n_resamples, confidence=confidence, seed=seed,
            ))
        except UndefinedStatistic as error:
            intervals[name], reasons[f"{name}_ci"] = None, str(error)
    interpretable = units.iou[idx] > iou_threshold
    for suffix, part in (("interpretable", interpretable), ("uninterpretable", units.iou[idx] <= iou_threshold)):
        name = f"concept_match_rate_{suffix}"
        try:
            result[name] = _concept_match(units, idx[part])
        except UndefinedStatistic as error:
            result[name], reasons[name] = None, f"{error} among {suffix} units"
    for name, values in (("spearman_iou_precision", units.precision), ("spearman_iou_agreement", units.word_agreement)):
        both = ~np.isnan(units.iou[idx]) & ~np.isnan(values[idx])
        try:
            rho, p_value = spearman(units.iou[idx][both].tolist(), values[idx][both].tolist())
            result[name] = {"rho": rho, "p_value": p_value, "n": int(both.sum())}
        except UndefinedStatistic as error:
            result[name], reasons[name] = None, str(error)
    result["confusion_matrix"] = {"labels": list(CODES), "matrix": _confusion(units, idx).tolist()}
    result["ci"] = intervals
    result["reasons"] = reasons
    return result


def _category_share_rows(units: _Units, scopes: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for layer, idx in scopes.items():
        for source, values in (("human", units.human[idx]), ("dissection", units.automatic[idx])):
            given = values[values >= 0]
            row: dict[str, Any] = {"layer": layer, "source": source, "units": int(given.size)}
            for k, code in enumerate(CODES):
                row[code] = float((given == k).mean()) if given.size else None
            rows.append(row)
    return rows


def _disagreement_rows(units: _Units) -> list[dict[str, Any]]:
    """Units where the human and the dissection category or concept differ, most confident first.

    confidence = human confidence (Dawid–Skene posterior of the human category, or the majority's vote
    share) × IoU: a disagreement matters most when the crowd is sure and the dissection label is strong.
    """
    rows = []
    for row in units.rows:
        kinds = [kind for kind in ("category", "concept") if row[f"{kind}_match"] is False]
        if not kinds:
            continue
        confidence = (row["human_confidence"] or 0.0) * (row["iou"] or 0.0)
        rows.append({
            "unit_key": row["unit_key"],
            "layer": row["layer"],
            "disagreement": "+".join(kinds),
            "human_category": row["human_category"],
            "auto_human_category": row["auto_human_category"],
            "consensus_word": row["consensus_word"],
            "auto_label": row["auto_label"],
            "human_confidence": row["human_confidence"],
            "iou": row["iou"],
            "confidence": confidence,
            "url": row["url"],
        })
    return sorted(rows, key=lambda row: (-row["confidence"], row["layer"], row["unit_key"]))


def _worker_rows(records: Sequence[UnitRecord], ds: DawidSkeneResult) -> list[dict[str, Any]]:
    """Per worker: answers, agreement with the unit's majority, and Dawid–Skene's expected accuracy."""
    answered: Counter[str] = Counter()
    with_majority: Counter[str] = Counter()
    for record in records:
        majority = majority_vote(answer.category for answer in record.answers)
        for answer in record.answers:
            if answer.category is not None:
                answered[answer.worker] += 1
                with_majority[answer.worker] += answer.category == majority
    return [
        {
            "worker": worker,
            "answers": answered[worker],
            "majority_agreement": with_majority[worker] / answered[worker],
            "ds_accuracy": float(ds.priors @ np.diag(confusion)),
        }
        for worker, confusion in sorted(ds.worker_confusion.items())
    ]


def _layer_row(layer: str, scope: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"layer": layer, "units": scope["units"]}
    for name in _METRICS:
        interval = scope["ci"].get(name)
        row[name] = scope[name]
        row[f"{name}_ci_low"] = interval[0] if interval else None
        row[f"{name}_ci_high"] = interval[1] if interval else None
    for name in ("concept_match_rate_interpretable", "concept_match_rate_uninterpretable"):
        row[name] = scope[name]
    for name in ("spearman_iou_precision", "spearman_iou_agreement"):
        row[f"{name}_rho"] = scope[name]["rho"] if scope[name] else None
        row[f"{name}_p"] = scope[name]["p_value"] if scope[name] else None
    return row


def _confusion_rows(scopes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for layer, scope in scopes.items():
        for code, counts in zip(CODES, scope["confusion_matrix"]["matrix"]):
            rows.append({"layer": layer, "human": code, **dict(zip(CODES, counts))})
    return rows


def _verification_rows(report: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {
            "layer": layer,
            "source": source,
            "units": entry["units"],
            "correct": entry["correct"],
            "share": entry["share"],
            "ci_low": entry["ci"][0] if entry["ci"] else None,
            "ci_high": entry["ci"][1] if entry["ci"] else None,
        }
        for layer, sources in report.items()
        for source, entry in sources.items()
    ]


def _jsonable(value: Any, path: str = "summary") -> Any:
    """Plain Python values only; a NaN or infinity here is a bug, not data, so it stops the export."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        if not math.isfinite(value):
            raise AssertionError(f"{path} is {value}: a statistic leaked a non-finite value")
        return float(value)
    return value


def summarize(
    records: Sequence[UnitRecord],
    *,
    verification: Sequence[VerificationAnswer] = (),
    synonyms: Mapping[str, str] | None = None,
    aggregation: Literal["dawid_skene", "majority"] = "dawid_skene",
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    dawid_skene_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every comparison statistic and table for a batch, JSON-ready (no NaN, plain Python types).

    Top level and each `layers[<layer>]` (layers in order of first appearance) hold: units,
    fleiss_kappa, krippendorff_alpha, word_agreement, category_agreement, cohen_kappa,
    concept_match_rate, concept_match_rate_(un)interpretable, mean_precision,
    spearman_iou_precision / spearman_iou_agreement ({rho, p_value, n}), confusion_matrix
    ({labels, matrix}: rows human, columns dissection), ci ({statistic: [low, high] | None}) and
    reasons ({statistic: why it is None; `<statistic>_ci`: why only its interval is None}); plus
    verification ({human|dissection: {units, correct, share, ci, reason}}) when verification answers
    are given. `tables` holds lists of row dicts (for CSV and JSON): units, layers, confusion,
    category_shares, disagreements, workers and, with verification answers, verification; rows that
    cover every layer have layer `ALL_LAYERS`. `settings` echoes the options and whether Dawid–Skene
    converged. The human category of a unit comes from `aggregation`: Dawid–Skene fitted once over all
    units (workers are shared across layers), or the majority vote. Intervals are seeded percentile
    bootstraps over the scope's units (`bootstrap_ci`), verification intervals Wilson's.
    """
    if aggregation not in ("dawid_skene", "majority"):
        raise ValueError(f"aggregation must be 'dawid_skene' or 'majority', got {aggregation!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    records = list(records)
    _validate(records)
    units, ds = _build_units(
        records,
        synonyms=synonyms,
        aggregation=aggregation,
        iou_threshold=iou_threshold,
        dawid_skene_options=dawid_skene_options or {},
    )
    layers = list(dict.fromkeys(record.layer for record in records))
    layer_index = np.array([layers.index(record.layer) for record in records], dtype=np.intp)
    scope_idx = {layer: np.flatnonzero(layer_index == k) for k, layer in enumerate(layers)}
    options = dict(iou_threshold=iou_threshold, n_resamples=n_resamples, confidence=confidence, seed=seed)
    overall = _scope(units, np.arange(len(records)), **options)
    per_layer = {layer: _scope(units, idx, **options) for layer, idx in scope_idx.items()}
    summary: dict[str, Any] = {**overall, "layers": per_layer}
    tables: dict[str, list[dict[str, Any]]] = {
        "units": units.rows,
        "layers": [_layer_row(layer, scope) for layer, scope in per_layer.items()] + [_layer_row(ALL_LAYERS, overall)],
        "confusion": _confusion_rows({**per_layer, ALL_LAYERS: overall}),
        "category_shares": _category_share_rows(units, {**scope_idx, ALL_LAYERS: np.arange(len(records))}),
        "disagreements": _disagreement_rows(units),
        "workers": _worker_rows(records, ds),
    }
    if verification:
        report = verification_report(verification, confidence=confidence)
        summary["verification"] = report[ALL_LAYERS]
        for layer, entry in report.items():
            if layer == ALL_LAYERS:
                continue
            if layer not in per_layer:
                per_layer[layer] = _scope(units, np.array([], dtype=np.intp), **options)
            per_layer[layer]["verification"] = entry
        tables["verification"] = _verification_rows(report)
    summary["tables"] = tables
    summary["settings"] = {
        "aggregation": aggregation,
        "iou_threshold": iou_threshold,
        "n_resamples": n_resamples,
        "confidence": confidence,
        "seed": seed,
        "dawid_skene_converged": ds.converged,
        "dawid_skene_iterations": ds.iterations,
    }
    return _jsonable(summary)


def rows_to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A table (list of row dicts) as CSV text, None as an empty cell.

    Columns are `columns` or the keys in first-seen order; an empty table without `columns` is "".
    """
    columns = list(columns) if columns is not None else list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})
    return buffer.getvalue()
