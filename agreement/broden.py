"""Broden's concept categories mapped onto the six human categories, so both sides can be compared.

Broden has no "region or surface" category: people call stuff such as sky or floor a region, while
Broden files it under `object`, hence `STUFF_LABELS`.
"""

from __future__ import annotations

from functools import lru_cache

from agreement.categories import COLOR, OBJECT, PART, REGION, SCENE, TEXTURE
from agreement.words import dissection_word, normalize_word

BRODEN_CATEGORIES: tuple[str, ...] = ("color", "object", "part", "material", "scene", "texture")
BRODEN_TO_HUMAN: dict[str, str] = {
    "color": COLOR,
    "texture": TEXTURE,
    "material": TEXTURE,
    "part": PART,
    "scene": SCENE,
    "object": OBJECT,
}
STUFF_LABELS: frozenset[str] = frozenset(
    {
        "sky",
        "road",
        "grass",
        "floor",
        "wall",
        "ceiling",
        "water",
        "field",
        "ground",
        "earth",
        "sand",
        "snow",
        "sea",
        "river",
        "lake",
        "mountain",
        "hill",
        "sidewalk",
        "path",
        "pavement",
        "runway",
        "dirt track",
    }
)
"""Broden `object` labels that people call a region or surface rather than an object."""


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
