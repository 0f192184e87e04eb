"""Whether an answer matches a gold unit's known answer; plain Python so tests and reports can reuse it.

The worker writes "one or two words", so an answer passes when its category is the gold category and its
normalised words equal an accepted word or phrase, or one of its words does (e.g. "red circle" passes for
the accepted word "circle"). Normalising lowercases, turns punctuation into spaces and collapses spaces.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def normalise(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def gold_matches(*, words: str, category: str, gold_category: str, gold_words: Iterable[str]) -> bool:
    if category != gold_category:
        return False
    answer = normalise(words)
    accepted = {normalise(word) for word in gold_words} - {""}
    return answer in accepted or any(token in accepted for token in answer.split())
