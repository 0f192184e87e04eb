"""Whether an answer matches a gold unit's known answer, judged with the statistics' own normaliser.

An answer passes when its category is the gold category, it has at most `words.MAX_WORDS` words, and
one of its normalised whole words is one of the accepted words (every word of every accepted phrase):
"red circle" and "dark red" pass for "red", "Cars" passes for "car", but "redwood" does not pass for
"red", and a list of six colours does not pass because it is no longer an answer of one or two words.
"""

from __future__ import annotations

from collections.abc import Iterable

from agreement.words import TooManyWords, answer_words


def gold_matches(*, words: str, category: str, gold_category: str, gold_words: Iterable[str]) -> bool:
    if category != gold_category:
        return False
    try:
        answer = set(answer_words(words))
    except TooManyWords:
        return False
    accepted = {word for phrase in gold_words for word in answer_words(phrase, max_words=None)}
    return bool(answer & accepted)
