"""The plain records the statistics read, built by callers from whatever storage they use (the ORM, CSV).

Frozen dataclasses with no behaviour, so that every statistic can be tested on hand-written data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ALL_LAYERS = "(all)"
"""The `layer` value of table rows that cover every layer (no PyTorch module name has parentheses)."""
DEFAULT_MIN_ANSWERS = 2
"""Answers a unit needs before its answers enter any statistic: one answer shows no agreement, and a
consensus of one is that worker's opinion."""

Source = Literal["human", "dissection"]
SOURCES: tuple[Source, ...] = ("human", "dissection")
"""Where a candidate label in a blind verification task came from."""


@dataclass(frozen=True)
class Answer:
    """One worker's answer on one unit: the words typed, the category picked, the share of images kept.

    `category` is a `categories.CODES` code or None (not answered); `precision` is kept / shown in
    [0, 1] or None (see `aggregation.image_precision`).
    """

    worker: str
    words: str
    category: str | None
    precision: float | None = None


@dataclass(frozen=True)
class UnitRecord:
    """One unit with its dissection result (all None when the unit was not dissected) and its answers.

    `auto_category` is the Broden category of the dissection label (one of `broden.BRODEN_CATEGORIES`);
    `url` is the unit's review page, copied into the disagreement table.
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
    source: Source
    worker: str
    yes: bool
