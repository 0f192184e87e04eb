"""Blind verification: how often workers judged the human and the dissection label of a unit correct.

Workers see one candidate label at a time without its source, so the two shares are comparable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from agreement.records import ALL_LAYERS, SOURCES, VerificationAnswer
from agreement.statistics import wilson_interval


def verification_report(answers: Sequence[VerificationAnswer], *, confidence: float = 0.95) -> dict[str, Any]:
    """Per layer (and `ALL_LAYERS`), the share of units whose human and whose dissection label were
    judged correct — by a strict majority of yes answers on the unit (a tie is not correct) — with
    Wilson intervals. Returns {layer: {source: {units, answers, correct, share, ci, reason}}}.
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
                f"verification answer {position}: unit {answer.unit_key!r} is in layer "
                f"{layer_of[answer.unit_key]!r}, not {answer.layer!r}"
            )
        votes[(answer.layer, answer.unit_key, answer.source)].append(bool(answer.yes))
    layers = list(dict.fromkeys(layer_of.values()))
    report: dict[str, Any] = {}
    for layer in [*layers, ALL_LAYERS]:
        report[layer] = {}
        for source in SOURCES:
            ballots = [
                yes
                for (unit_layer, _, unit_source), yes in votes.items()
                if unit_source == source and (layer == ALL_LAYERS or unit_layer == layer)
            ]
            judged = [2 * sum(yes) > len(yes) for yes in ballots]
            entry: dict[str, Any] = {
                "units": len(judged),
                "answers": sum(len(yes) for yes in ballots),
                "correct": sum(judged),
                "share": None,
                "ci": None,
                "reason": None,
            }
            if judged:
                entry["share"] = sum(judged) / len(judged)
                entry["ci"] = list(wilson_interval(sum(judged), len(judged), confidence=confidence))
            else:
                entry["reason"] = f"no verification answers on {source} labels"
            report[layer][source] = entry
    return report
