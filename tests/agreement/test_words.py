"""One normaliser for everything: answers split into whole words, and gold answers matched like the
statistics.
"""

from __future__ import annotations

import pytest

from agreement.gold import gold_matches
from agreement.words import MAX_WORDS, TooManyWords, answer_words, canonical_word, normalize_word

SIX_COLOURS = "blue green red yellow purple pink"


def test_answer_words_are_normalised_whole_words() -> None:
    assert answer_words("  Red   Cars!! ") == ("red", "car")
    assert answer_words("children") == ("child",)
    assert answer_words("t-shirt") == ("t shirt",), "a hyphenated compound is one word"
    assert answer_words("cat's toys") == ("cat", "toy")
    assert answer_words("red/blue") == ("red", "blue")
    assert answer_words("...") == ()
    assert answer_words("") == ()


@pytest.mark.parametrize(
    "text", ["  Red   Cars!! ", "t-shirt", "cat's toys", "Skies", "dark_red", "red, car"]
)
def test_answer_words_agree_with_the_statistics_normaliser(text: str) -> None:
    assert " ".join(answer_words(text)) == normalize_word(text)


@pytest.mark.parametrize("text", [SIX_COLOURS, "red, blue, green", "red car wheel", "a/b/c"])
def test_answers_have_at_most_two_words(text: str) -> None:
    assert MAX_WORDS == 2
    with pytest.raises(TooManyWords, match=r"at most 2"):
        answer_words(text)
    assert len(answer_words(text, max_words=None)) > MAX_WORDS


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("cars", "car"),
        ("car", "Cars!"),
        ("red", "RED  Circle!"),
        ("red", "dark red"),
        ("sky", "skies"),
        ("children", "child"),
        ("t-shirt", "T-Shirts"),
    ],
)
def test_gold_matches_lemmatised_whole_words(gold: str, answer: str) -> None:
    assert gold_matches(words=answer, category="object", gold_category="object", gold_words=[gold])


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("red", SIX_COLOURS),
        ("red", "redwood"),
        ("red", "bored"),
        ("car", "carpet"),
        ("t-shirt", "shirt"),
        ("red", ""),
        ("red", "..."),
    ],
)
def test_gold_refuses_parts_of_words_and_long_answers(gold: str, answer: str) -> None:
    assert not gold_matches(words=answer, category="color", gold_category="color", gold_words=[gold])


def test_gold_needs_the_gold_category_and_accepts_any_word_of_an_accepted_phrase() -> None:
    gold = {"gold_category": "color", "gold_words": ["Red", "red circle"]}
    assert gold_matches(words="red", category="color", **gold)
    assert gold_matches(words="circles", category="color", **gold)
    assert not gold_matches(words="red", category="object", **gold)
    assert not gold_matches(words="blue", category="color", **gold)
    assert not gold_matches(words="red", category="color", gold_category="color", gold_words=[])


@pytest.mark.parametrize("word", ["Cars", "cars", "Skies", "children", "Street", "dogs", "redwood"])
@pytest.mark.parametrize("gold", ["car", "sky", "child", "street", "dog", "red"])
def test_a_one_word_answer_passes_gold_exactly_when_the_statistics_call_it_the_same_word(
    word: str, gold: str
) -> None:
    same = canonical_word(word) == canonical_word(gold)
    assert gold_matches(words=word, category="scene", gold_category="scene", gold_words=[gold]) is same
