"""A simulated crowd for demos, tests and load: honest workers with a given accuracy, and spammers.

Pure and seeded (no I/O): given units whose true category and concept words are known, it decides what
every worker answers, in labelling tasks (`simulate_answers`) and in blind verification tasks
(`simulate_verification`), so that the statistics can be checked against a known truth (e.g. that
Dawid–Skene sees through the spammers) and the platform can be driven through its real pages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from lemminflect import getInflection

from agreement.aggregation import image_precision
from agreement.categories import CODES, COLOR, OBJECT, PART, REGION, SCENE, TEXTURE
from agreement.records import SOURCES
from agreement.words import canonical_word, dissection_word

PLAUSIBLE_CONFUSIONS: dict[str, tuple[str, ...]] = {
    SCENE: (REGION, OBJECT),
    REGION: (TEXTURE, SCENE),
    OBJECT: (PART, SCENE),
    PART: (OBJECT, TEXTURE),
    TEXTURE: (REGION, COLOR),
    COLOR: (TEXTURE, REGION),
}
"""What an honest worker who gets a unit wrong picks instead: the neighbouring categories of the protocol."""

FALLBACK_WORDS: dict[str, tuple[str, ...]] = {
    SCENE: ("street", "kitchen", "bedroom"),
    REGION: ("sky", "grass", "floor"),
    OBJECT: ("car", "dog", "person"),
    PART: ("wheel", "leg", "window"),
    TEXTURE: ("striped", "wood", "dotted"),
    COLOR: ("red", "blue", "green"),
}
"""Wrong words by category, for when no other unit of the confused category supplies one."""

SPAMMER_REJECT_RATE = 0.5
SPAMMER_YES_RATE = 0.5
HONEST_FALSE_REJECT_SHARE = 0.2
"""An honest worker wrongly clicks a fitting image with probability (1 − accuracy) × this share."""


@dataclass(frozen=True)
class TrueUnit:
    """A unit whose answer is known: its category (a CODES code), its concept words (name first, then
    synonyms), how many images a task shows and the share of them that truly show the concept."""

    unit_key: str
    category: str
    words: tuple[str, ...]
    images: int = 20
    fitting: float = 0.8


@dataclass(frozen=True)
class SimulatedWorker:
    name: str
    spammer: bool
    accuracy: float


@dataclass(frozen=True)
class SimulatedAnswer:
    """One worker's answer: words as typed, a category, and the 0-based image positions clicked
    as not fitting.
    """

    worker: str
    unit_key: str
    words: str
    category: str
    rejected: tuple[int, ...]
    images: int

    @property
    def precision(self) -> float:
        return image_precision(shown=self.images, rejected=len(self.rejected))


@dataclass(frozen=True)
class Candidate:
    """A label shown in a blind verification task; `source` (human or dissection) is hidden from workers."""

    unit_key: str
    source: str
    label: str


@dataclass(frozen=True)
class SimulatedJudgement:
    """One worker's yes/no on "Does this label describe most of these images?"."""

    worker: str
    unit_key: str
    source: str
    label: str
    yes: bool


def make_crowd(*, workers: int, spammers: int, accuracy: float, prefix: str = "sim") -> list[SimulatedWorker]:
    """`workers` in all, of whom `spammers` answer at random; honest ones are right with `accuracy`.

    Names are `<prefix>-honest-NN` and `<prefix>-spammer-NN`, so a demo shows who is who.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if not 0 <= spammers <= workers:
        raise ValueError(f"spammers must be between 0 and workers ({workers}), got {spammers}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    honest = [
        SimulatedWorker(f"{prefix}-honest-{i:02d}", False, accuracy) for i in range(1, workers - spammers + 1)
    ]
    random = [
        SimulatedWorker(f"{prefix}-spammer-{i:02d}", True, 1.0 / len(CODES)) for i in range(1, spammers + 1)
    ]
    return honest + random


def _validate(units: Sequence[TrueUnit]) -> None:
    seen: set[str] = set()
    for unit in units:
        where = f"unit {unit.unit_key!r}"
        if unit.unit_key in seen:
            raise ValueError(f"{where} appears twice")
        seen.add(unit.unit_key)
        if unit.category not in CODES:
            raise ValueError(f"{where}: category {unit.category!r} is not one of {', '.join(CODES)}")
        if not any(word.strip() for word in unit.words):
            raise ValueError(f"{where}: no concept words")
        if unit.images < 1:
            raise ValueError(f"{where}: images must be at least 1, got {unit.images}")
        if not 0.0 <= unit.fitting <= 1.0:
            raise ValueError(f"{where}: fitting must be in [0, 1], got {unit.fitting}")


def _typed(word: str, rng: np.random.Generator) -> str:
    """The word as a person might type it: as is, capitalized, in the plural (nouns only), or with
    stray spaces.
    """
    form = int(rng.integers(4))
    if form == 1:
        return word.capitalize()
    if form == 2:
        head, _, last = word.rpartition(" ")
        plural = getInflection(last, tag="NNS", inflect_oov=False)
        return f"{head} {plural[0]}".strip() if plural else word
    if form == 3:
        return f"  {word} "
    return word


def simulate_answers(
    units: Sequence[TrueUnit],
    crowd: Sequence[SimulatedWorker],
    *,
    seed: int = 0,
    per_unit: int | None = None,
) -> list[SimulatedAnswer]:
    """Every answer the crowd gives, deterministic for a seed; units in order, then workers in crowd order.

    `per_unit` workers, drawn without replacement, answer each unit (None: all of them). An honest
    worker is right with its accuracy — the true category and one of the concept's words — and
    otherwise picks a plausible confusion (`PLAUSIBLE_CONFUSIONS`) with a word of that category. It
    clicks each image that does not fit with probability accuracy and each fitting one with probability
    (1 − accuracy) × `HONEST_FALSE_REJECT_SHARE`. A spammer picks a category and a word uniformly at
    random and clicks each image with probability `SPAMMER_REJECT_RATE`.
    """
    _validate(units)
    if not crowd:
        raise ValueError("the crowd is empty")
    if per_unit is not None and not 1 <= per_unit <= len(crowd):
        raise ValueError(f"per_unit must be between 1 and the crowd size ({len(crowd)}), got {per_unit}")
    rng = np.random.default_rng(seed)
    vocabulary = {
        code: sorted({u.words[0].strip() for u in units if u.category == code} | set(FALLBACK_WORDS[code]))
        for code in CODES
    }
    all_words = sorted({word for words in vocabulary.values() for word in words})
    answers = []
    for unit in units:
        words = [word.strip() for word in unit.words if word.strip()]
        fits = rng.random(unit.images) < unit.fitting
        chosen = (
            range(len(crowd)) if per_unit is None else sorted(rng.choice(len(crowd), per_unit, replace=False))
        )
        for position in chosen:
            worker = crowd[position]
            if worker.spammer:
                category = CODES[int(rng.integers(len(CODES)))]
                word = all_words[int(rng.integers(len(all_words)))]
                clicked = rng.random(unit.images) < SPAMMER_REJECT_RATE
            else:
                if rng.random() < worker.accuracy:
                    category = unit.category
                    word = words[int(rng.integers(len(words)))]
                else:
                    confusions = PLAUSIBLE_CONFUSIONS[unit.category]
                    category = confusions[int(rng.integers(len(confusions)))]
                    wrong = [w for w in vocabulary[category] if w not in words] or list(
                        FALLBACK_WORDS[category]
                    )
                    word = wrong[int(rng.integers(len(wrong)))]
                reject = np.where(fits, (1.0 - worker.accuracy) * HONEST_FALSE_REJECT_SHARE, worker.accuracy)
                clicked = rng.random(unit.images) < reject
            answers.append(
                SimulatedAnswer(
                    worker=worker.name,
                    unit_key=unit.unit_key,
                    words=_typed(word, rng),
                    category=category,
                    rejected=tuple(int(i) for i in np.flatnonzero(clicked)),
                    images=unit.images,
                )
            )
    return answers


def simulate_verification(
    units: Sequence[TrueUnit],
    candidates: Sequence[Candidate],
    crowd: Sequence[SimulatedWorker],
    *,
    seed: int = 0,
    per_candidate: int | None = None,
    synonyms: Mapping[str, str] | None = None,
) -> list[SimulatedJudgement]:
    """Every yes/no the crowd gives on the candidates, deterministic for a seed.

    A candidate is right when its label (Broden suffix dropped, normalized, synonyms applied) is one of
    its unit's concept words. An honest worker judges rightly with its accuracy, whichever the source;
    a spammer says yes with probability `SPAMMER_YES_RATE`. `per_candidate` workers (None: all) judge
    each candidate.
    """
    _validate(units)
    if not crowd:
        raise ValueError("the crowd is empty")
    if per_candidate is not None and not 1 <= per_candidate <= len(crowd):
        raise ValueError(
            f"per_candidate must be between 1 and the crowd size ({len(crowd)}), got {per_candidate}"
        )
    truths = {unit.unit_key: {canonical_word(word, synonyms) for word in unit.words} for unit in units}
    rng = np.random.default_rng(seed)
    judgements = []
    for position, candidate in enumerate(candidates):
        if candidate.unit_key not in truths:
            raise ValueError(f"candidate {position}: unknown unit {candidate.unit_key!r}")
        if candidate.source not in SOURCES:
            raise ValueError(
                f"candidate {position}: source must be human or dissection, got {candidate.source!r}"
            )
        word = dissection_word(candidate.label)
        right = (synonyms.get(word, word) if synonyms else word) in truths[candidate.unit_key]
        chosen = (
            range(len(crowd))
            if per_candidate is None
            else sorted(rng.choice(len(crowd), per_candidate, replace=False))
        )
        for index in chosen:
            worker = crowd[index]
            if worker.spammer:
                yes = bool(rng.random() < SPAMMER_YES_RATE)
            else:
                yes = right if rng.random() < worker.accuracy else not right
            judgements.append(
                SimulatedJudgement(worker.name, candidate.unit_key, candidate.source, candidate.label, yes)
            )
    return judgements
