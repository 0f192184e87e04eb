"""The batch report: every comparison statistic and table, JSON-ready, from plain records.

No Django here: callers build `UnitRecord`s and `VerificationAnswer`s (from the ORM, a CSV…) and call
`summarize`, whose dict the dashboard, the CSV/JSON exports and `manage.py compare` all read. A
statistic that is undefined on a scope becomes None plus the reason under `reasons`, never NaN; one that is
defined but says less than it seems (Cohen's κ when one side uses a single category) gets a `caveats` note.
Units with fewer answers than `min_answers` are counted apart and enter no statistic.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from agreement.aggregation import (
    DawidSkeneResult,
    agreement_share,
    dawid_skene,
    majority_vote,
    mean_precision,
    most_common,
)
from agreement.broden import BRODEN_CATEGORIES, human_category_of
from agreement.categories import CODES, LABELS
from agreement.records import ALL_LAYERS, DEFAULT_MIN_ANSWERS, UnitRecord, VerificationAnswer
from agreement.statistics import (
    MIN_BOOTSTRAP_UNITS,
    Counts,
    Indices,
    UndefinedStatistic,
    bootstrap_ci,
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    spearman,
)
from agreement.verification import verification_report
from agreement.words import canonical_word, dissection_word

DEFAULT_IOU_THRESHOLD = 0.04
"""Network Dissection's IoU above which a unit counts as interpretable (Bau et al. 2017)."""

Floats = npt.NDArray[np.float64]


@dataclass
class _Units:
    """Per-unit arrays that every scope statistic (and every bootstrap resample) indexes.

    Units below the minimum of answers have `counted` False and every other array missing (-1, NaN, a
    zero row of counts), so that no statistic can see them.
    """

    counts: Counts
    answers: Indices
    counted: npt.NDArray[np.bool_]
    workers: list[frozenset[str]]
    human: Indices
    automatic: Indices
    match: Indices
    word_agreement: Floats
    precision: Floats
    iou: Floats
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
                    f"{unit}, worker {answer.worker!r}: field 'precision' must be in [0, 1], "
                    f"got {answer.precision!r}"
                )


def _build_units(
    records: list[UnitRecord],
    *,
    synonyms: Mapping[str, str] | None,
    aggregation: str,
    iou_threshold: float,
    min_answers: int,
    dawid_skene_options: Mapping[str, Any],
) -> tuple[_Units, DawidSkeneResult]:
    """Per-unit values; Dawid–Skene is fitted on the counted units only, and keeps a unit's only answer."""
    index = {code: k for k, code in enumerate(CODES)}
    counted = np.array([len(record.answers) >= min_answers for record in records], dtype=np.bool_)
    counts = category_counts(
        [answer.category for answer in record.answers] if keep else []
        for record, keep in zip(records, counted, strict=True)
    )
    ds = dawid_skene(
        [
            [(answer.worker, answer.category) for answer in record.answers] if keep else []
            for record, keep in zip(records, counted, strict=True)
        ],
        **dawid_skene_options,
    )
    n = len(records)
    units = _Units(
        counts=counts,
        answers=np.array([len(record.answers) for record in records], dtype=np.intp),
        counted=counted,
        workers=[frozenset(answer.worker for answer in record.answers) for record in records],
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
        ds_label = given[0] if len(given) == 1 else ds.labels[i]
        ds_posterior = float(ds.posteriors[i, index[ds_label]]) if ds_label and counted[i] else None
        human, confidence = (
            (ds_label, ds_posterior) if aggregation == "dawid_skene" else (majority, majority_share)
        )
        if not counted[i]:
            ds_label = human = confidence = None
        words = [
            word for word in (canonical_word(answer.words, synonyms) for answer in record.answers) if word
        ]
        consensus = most_common(words)
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
        match = (
            consensus == auto_word if consensus is not None and auto_word is not None and counted[i] else None
        )
        interpretable = record.iou > iou_threshold if record.iou is not None else None
        if not counted[i]:
            word_share = precision = None
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
        units.rows.append(
            {
                "unit_key": record.unit_key,
                "layer": record.layer,
                "answers": len(record.answers),
                "counted": bool(counted[i]),
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
            }
        )
    return units, ds


def _category_agreement(units: _Units, idx: Indices) -> float:
    human, automatic = units.human[idx], units.automatic[idx]
    both = (human >= 0) & (automatic >= 0)
    if not both.any():
        raise UndefinedStatistic("no unit has both a human and an automatic category")
    return float((human[both] == automatic[both]).mean())


def _confusion(units: _Units, idx: Indices) -> Counts:
    human, automatic = units.human[idx], units.automatic[idx]
    both = (human >= 0) & (automatic >= 0)
    matrix = np.zeros((len(CODES), len(CODES)), dtype=np.int64)
    np.add.at(matrix, (human[both], automatic[both]), 1)
    return matrix


def _share(values: npt.NDArray[Any], what: str) -> float:
    if values.size == 0:
        raise UndefinedStatistic(f"no unit has {what}")
    return float(values.mean())


def _concept_match(units: _Units, idx: Indices) -> float:
    match = units.match[idx]
    return _share(match[match >= 0], "both a consensus word and a dissection label")


def _word_agreement(units: _Units, idx: Indices) -> float:
    values = units.word_agreement[idx]
    return _share(values[~np.isnan(values)], "words from at least two workers")


def _mean_precision(units: _Units, idx: Indices) -> float:
    values = units.precision[idx]
    return _share(values[~np.isnan(values)], "image precision from a worker")


_METRICS: dict[str, Callable[[_Units, Indices], float]] = {
    "fleiss_kappa": lambda units, idx: fleiss_kappa(units.counts[idx]),
    "krippendorff_alpha": lambda units, idx: krippendorff_alpha(units.counts[idx]),
    "word_agreement": _word_agreement,
    "category_agreement": _category_agreement,
    "cohen_kappa": lambda units, idx: cohen_kappa(_confusion(units, idx)),
    "concept_match_rate": _concept_match,
    "mean_precision": _mean_precision,
}


def _support(units: _Units, idx: Indices, iou_threshold: float) -> dict[str, npt.NDArray[np.bool_]]:
    """Per statistic, which of the scope's counted units it rests on."""
    both = (units.human[idx] >= 0) & (units.automatic[idx] >= 0)
    matched = units.match[idx] >= 0
    pairable = units.counts[idx].sum(1) >= 2
    precision = ~np.isnan(units.precision[idx])
    agreement = ~np.isnan(units.word_agreement[idx])
    iou = ~np.isnan(units.iou[idx])
    return {
        "fleiss_kappa": pairable,
        "krippendorff_alpha": pairable,
        "word_agreement": agreement,
        "category_agreement": both,
        "cohen_kappa": both,
        "concept_match_rate": matched,
        "mean_precision": precision,
        "concept_match_rate_interpretable": matched & (units.iou[idx] > iou_threshold),
        "concept_match_rate_uninterpretable": matched & (units.iou[idx] <= iou_threshold),
        "spearman_iou_precision": iou & precision,
        "spearman_iou_agreement": iou & agreement,
    }


def _caveats(units: _Units, idx: Indices, result: Mapping[str, Any]) -> dict[str, str]:
    """Notes on defined statistics that say less than they seem to: one category on a side, few units."""
    caveats: dict[str, str] = {}
    for name in _METRICS:
        n = result["support"][name]["units"]
        if result[name] is not None and n < MIN_BOOTSTRAP_UNITS:
            caveats[name] = (
                f"rests on {n} unit{'' if n == 1 else 's'} only (fewer than {MIN_BOOTSTRAP_UNITS}): "
                "too few to say much, and too few for an interval"
            )
    both = (units.human[idx] >= 0) & (units.automatic[idx] >= 0)
    for side, values in (
        ("Network Dissection", units.automatic[idx][both]),
        ("The workers' consensus", units.human[idx][both]),
    ):
        used = np.unique(values)
        if result["cohen_kappa"] is None or used.size != 1:
            continue
        category = LABELS[CODES[int(used[0])]]
        caveats["cohen_kappa"] = (
            f"{side} puts all {int(both.sum())} units in one category ({category}), so κ is 0 whatever "
            "the agreement: chance alone predicts every match"
        )
        if side == "Network Dissection":
            caveats["category_agreement"] = (
                f"Network Dissection puts all {int(both.sum())} units in one category ({category}): this is "
                "the share the workers also put there; Cohen's κ says whether that beats chance"
            )
        break
    return caveats


def _scope(
    units: _Units,
    scope_idx: Indices,
    *,
    iou_threshold: float,
    min_answers: int,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """Every statistic of one scope (a layer or all units), with intervals, what each rests on, and the
    reasons for Nones. Only the scope's counted units (at least `min_answers` answers) enter a statistic."""
    idx = scope_idx[units.counted[scope_idx]]
    answers = units.answers[scope_idx]
    counted = units.counted[scope_idx]
    result: dict[str, Any] = {
        "units": int(scope_idx.size),
        "units_counted": int(idx.size),
        "units_apart": int(((answers > 0) & ~counted).sum()),
        "units_unanswered": int(((answers == 0) & ~counted).sum()),
        "answers": int(answers.sum()),
        "answers_counted": int(answers[counted].sum()),
    }
    support = _support(units, idx, iou_threshold)
    result["support"] = {
        name: {"units": int(mask.sum()), "answers": int(units.answers[idx][mask].sum())}
        for name, mask in support.items()
    }
    workers = set().union(*(units.workers[i] for i in idx))
    intervals: dict[str, list[float] | None] = {}
    reasons: dict[str, str] = {}
    for name, metric in _METRICS.items():
        try:
            result[name] = metric(units, idx)
        except UndefinedStatistic as error:
            result[name], intervals[name], reasons[name] = None, None, str(error)
            continue
        try:
            intervals[name] = list(
                bootstrap_ci(
                    idx.size,
                    lambda draw: metric(units, idx[draw]),  # noqa: B023 (called before the loop moves on)
                    n_resamples=n_resamples,
                    confidence=confidence,
                    seed=seed,
                )
            )
        except UndefinedStatistic as error:
            intervals[name], reasons[f"{name}_ci"] = None, str(error)
    for suffix in ("interpretable", "uninterpretable"):
        name = f"concept_match_rate_{suffix}"
        try:
            result[name] = _concept_match(units, idx[support[name]])
        except UndefinedStatistic as error:
            result[name], reasons[name] = None, f"{error} among {suffix} units"
    for name, values in (
        ("spearman_iou_precision", units.precision),
        ("spearman_iou_agreement", units.word_agreement),
    ):
        both = support[name]
        try:
            rho, p_value = spearman(units.iou[idx][both].tolist(), values[idx][both].tolist())
            result[name] = {"rho": rho, "p_value": p_value, "n": int(both.sum())}
        except UndefinedStatistic as error:
            result[name], reasons[name] = None, str(error)
    if idx.size == 0 and scope_idx.size:
        why = f"no unit has the minimum of {min_answers} answer{'' if min_answers == 1 else 's'} yet"
        if result["units_apart"]:
            why += f" ({result['units_apart']} with fewer are counted apart)"
        reasons.update({name: why for name in reasons if not name.endswith("_ci")})
    elif len(workers) == 1:
        for name in ("fleiss_kappa", "krippendorff_alpha", "word_agreement"):
            if name in reasons:
                reasons[name] = "only one worker answered: agreement among workers needs at least two"
    result["confusion_matrix"] = {"labels": list(CODES), "matrix": _confusion(units, idx).tolist()}
    result["ci"] = intervals
    result["reasons"] = reasons
    result["caveats"] = _caveats(units, idx, result)
    return result


def _category_share_rows(units: _Units, scopes: Mapping[str, Indices]) -> list[dict[str, Any]]:
    """Per scope and side, the share of its counted units in each category."""
    rows = []
    for layer, scope_idx in scopes.items():
        idx = scope_idx[units.counted[scope_idx]]
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
        rows.append(
            {
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
            }
        )
    return sorted(rows, key=lambda row: (-row["confidence"], row["layer"], row["unit_key"]))


def _worker_rows(records: Sequence[UnitRecord], ds: DawidSkeneResult) -> list[dict[str, Any]]:
    """Per worker: answers, agreement with the unit's majority, and Dawid–Skene's expected accuracy, over
    the counted units (`records` holds those only)."""
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


def _aggregation_caveat(aggregation: str, ds: DawidSkeneResult, workers: int) -> str | None:
    if aggregation != "dawid_skene":
        return None
    if workers == 1:
        return "one worker answered the counted units: Dawid–Skene can only repeat that worker's answers"
    if workers and not ds.converged:
        return (
            f"Dawid–Skene stopped after {ds.iterations} iterations without settling: "
            "its categories may still move; compare with the majority vote"
        )
    return None


def _layer_row(layer: str, scope: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"layer": layer}
    for name in ("units", "units_counted", "units_apart", "units_unanswered", "answers", "answers_counted"):
        row[name] = scope[name]
    for name in _METRICS:
        interval = scope["ci"].get(name)
        row[name] = scope[name]
        row[f"{name}_ci_low"] = interval[0] if interval else None
        row[f"{name}_ci_high"] = interval[1] if interval else None
        row[f"{name}_units"] = scope["support"][name]["units"]
        row[f"{name}_answers"] = scope["support"][name]["answers"]
    for name in ("concept_match_rate_interpretable", "concept_match_rate_uninterpretable"):
        row[name] = scope[name]
    for name in ("spearman_iou_precision", "spearman_iou_agreement"):
        row[f"{name}_rho"] = scope[name]["rho"] if scope[name] else None
        row[f"{name}_p"] = scope[name]["p_value"] if scope[name] else None
    return row


def _confusion_rows(scopes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for layer, scope in scopes.items():
        for code, counts in zip(CODES, scope["confusion_matrix"]["matrix"], strict=True):
            rows.append({"layer": layer, "human": code, **dict(zip(CODES, counts, strict=True))})
    return rows


def _verification_rows(report: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {
            "layer": layer,
            "source": source,
            "units": entry["units"],
            "answers": entry["answers"],
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
    min_answers: int = DEFAULT_MIN_ANSWERS,
    dawid_skene_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every comparison statistic and table for a batch, JSON-ready (no NaN, plain Python types).

    Only units with at least `min_answers` answers (the counted units) enter a statistic, a plot's data or
    Dawid–Skene's fit; the others are listed in the units table with counted False.
    Top level and each `layers[<layer>]` (layers in order of first appearance) hold: units (all of
    the scope's), units_counted, units_apart (answered fewer than `min_answers` times), units_unanswered,
    answers, answers_counted, support ({statistic: {units, answers} it rests on}), caveats ({statistic:
    why a defined value says less than it seems}; top level also `human_category` on the aggregation),
    fleiss_kappa, krippendorff_alpha, word_agreement, category_agreement, cohen_kappa,
    concept_match_rate, concept_match_rate_(un)interpretable, mean_precision,
    spearman_iou_precision / spearman_iou_agreement ({rho, p_value, n}), confusion_matrix
    ({labels, matrix}: rows human, columns dissection), ci ({statistic: [low, high] | None}) and
    reasons ({statistic: why it is None; `<statistic>_ci`: why only its interval is None}); plus
    verification ({human|dissection: {units, answers, correct, share, ci, reason}}) when verification answers
    are given. `tables` holds lists of row dicts (for CSV and JSON): units, layers, confusion,
    category_shares, disagreements, workers and, with verification answers, verification; rows that
    cover every layer have layer `ALL_LAYERS`. `settings` echoes the options and whether Dawid–Skene
    converged. The human category of a unit comes from `aggregation`: Dawid–Skene fitted once over all
    counted units (workers are shared across layers; a unit's only answer is kept), or the majority vote.
    Intervals are seeded percentile
    bootstraps over the scope's units (`bootstrap_ci`), verification intervals Wilson's.
    """
    if aggregation not in ("dawid_skene", "majority"):
        raise ValueError(f"aggregation must be 'dawid_skene' or 'majority', got {aggregation!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if min_answers < 1:
        raise ValueError(f"min_answers must be at least 1, got {min_answers}")
    records = list(records)
    _validate(records)
    units, ds = _build_units(
        records,
        synonyms=synonyms,
        aggregation=aggregation,
        iou_threshold=iou_threshold,
        min_answers=min_answers,
        dawid_skene_options=dawid_skene_options or {},
    )
    layers = list(dict.fromkeys(record.layer for record in records))
    layer_index = np.array([layers.index(record.layer) for record in records], dtype=np.intp)
    scope_idx = {layer: np.flatnonzero(layer_index == k) for k, layer in enumerate(layers)}
    scope = partial(
        _scope,
        units,
        iou_threshold=iou_threshold,
        min_answers=min_answers,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    overall = scope(np.arange(len(records)))
    per_layer = {layer: scope(idx) for layer, idx in scope_idx.items()}
    summary: dict[str, Any] = {**overall, "layers": per_layer}
    aggregation_caveat = _aggregation_caveat(aggregation, ds, len(ds.worker_confusion))
    if aggregation_caveat:
        summary["caveats"]["human_category"] = aggregation_caveat
    tables: dict[str, list[dict[str, Any]]] = {
        "units": units.rows,
        "layers": [_layer_row(layer, scope) for layer, scope in per_layer.items()]
        + [_layer_row(ALL_LAYERS, overall)],
        "confusion": _confusion_rows({**per_layer, ALL_LAYERS: overall}),
        "category_shares": _category_share_rows(units, {**scope_idx, ALL_LAYERS: np.arange(len(records))}),
        "disagreements": _disagreement_rows(units),
        "workers": _worker_rows(
            [record for record, keep in zip(records, units.counted, strict=True) if keep], ds
        ),
    }
    if verification:
        report = verification_report(verification, confidence=confidence)
        summary["verification"] = report[ALL_LAYERS]
        for layer, entry in report.items():
            if layer == ALL_LAYERS:
                continue
            if layer not in per_layer:
                per_layer[layer] = scope(np.array([], dtype=np.intp))
            per_layer[layer]["verification"] = entry
        tables["verification"] = _verification_rows(report)
    summary["tables"] = tables
    summary["settings"] = {
        "aggregation": aggregation,
        "iou_threshold": iou_threshold,
        "n_resamples": n_resamples,
        "confidence": confidence,
        "seed": seed,
        "min_answers": min_answers,
        "dawid_skene_converged": ds.converged,
        "dawid_skene_iterations": ds.iterations,
    }
    return _jsonable(summary)


def rows_to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A table (list of row dicts) as CSV text, None as an empty cell.

    Columns are `columns` or the keys in first-seen order; an empty table without `columns` is "".
    """
    columns = (
        list(columns) if columns is not None else list(dict.fromkeys(key for row in rows for key in row))
    )
    if not columns:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})
    return buffer.getvalue()
