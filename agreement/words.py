"""The one word normaliser: worker answers, gold answers, dissection labels and synonyms all go through it.

Comparing words anywhere (consensus, concept match, gold checks, verification) only makes sense when
every side is normalised the same way, so this is the single place that decides what "the same word" is.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

from lemminflect import getLemma

MAX_WORDS = 2
"""The protocol asks for "one or two words" per answer."""

_BRODEN_SUFFIX = re.compile(r"-[cs]$")
_APOSTROPHES = re.compile(r"['\u2019]")
_PUNCTUATION = re.compile(r"[^\w\s]|_")
_WORD_SEPARATORS = re.compile(r"[\s,;/|+&]+")


class TooManyWords(ValueError):
    """An answer with more than `MAX_WORDS` words; the message says how many."""


@lru_cache(maxsize=65536)
def _lemma(token: str) -> str:
    lemmas = getLemma(token, upos="NOUN")
    return str(lemmas[0]) if lemmas else token


def normalize_word(text: str) -> str:
    """Lowercase, drop apostrophes, turn other punctuation into spaces, collapse whitespace, lemmatize.

    Each token is lemmatized as a noun with lemminflect (offline; its first lemma is kept), so "Red
    Cars!" and "red car" are the same answer.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCTUATION.sub(" ", _APOSTROPHES.sub("", text))
    return " ".join(_lemma(token) for token in text.split())


def answer_words(text: str, *, max_words: int | None = MAX_WORDS) -> tuple[str, ...]:
    """The normalised whole words of an answer, in order; raises `TooManyWords` beyond `max_words`.

    Words are what the worker typed between spaces or list separators (, ; / | + &), so a hyphenated
    compound stays one word ("t-shirt" gives "t shirt") and "red, blue, green" is three. Pieces with no
    letter or digit are not words. `max_words` None lifts the limit (for accepted gold phrases).
    """
    words = tuple(word for word in map(normalize_word, _WORD_SEPARATORS.split(text)) if word)
    if max_words is not None and len(words) > max_words:
        raise TooManyWords(f"{len(words)} words in {text!r}; an answer has at most {max_words}")
    return words


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
