"""From several workers' answers on a unit to one answer: votes, Dawid–Skene, consensus word, precision.

Each aggregate is a small function on plain values so that the tests can hold it against a slow
implementation written from the definition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agreement.categories import CODES
from agreement.words import canonical_word


@dataclass(frozen=True)
class DawidSkeneResult:
    """Dawid–Skene estimates; rows and columns follow `classes`.

    `posteriors[i]` is P(true class | answers) for unit i (the priors for a unit without answers, whose
    label is None); `worker_confusion[w][k, l]` is P(worker w answers l | true class k).
    """

    classes: tuple[str, ...]
    posteriors: npt.NDArray[np.float64]
    labels: list[str | None]
    worker_confusion: dict[str, npt.NDArray[np.float64]]
    priors: npt.NDArray[np.float64]
    iterations: int
    converged: bool


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
    """The most frequent canonical word (`words.canonical_word`); ties go to the alphabetically first.

    Empty answers are ignored; None when no word was given.
    """
    return most_common([canonical_word(word, synonyms) for word in words])


def most_common(words: Iterable[str]) -> str | None:
    """The most frequent non-empty word, ties to the alphabetically first, so the result is order-free."""
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
                raise ValueError(
                    f"unit {unit}: unknown category {category!r}; expected one of {', '.join(classes)}"
                )
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
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is read after the loop)
        priors = posteriors[answered].sum(0) + smoothing
        priors /= priors.sum()
        counts = np.zeros((n_workers, n_classes, n_classes))
        # Through a (worker, answered, true) view: each answer adds its unit's posterior to one column.
        np.add.at(counts.transpose(0, 2, 1), (worker_of, label_of), posteriors[unit_of])
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
