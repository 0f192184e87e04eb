"""The six concept categories of the ICLR 2015 protocol, shared by the ORM, forms, statistics and plots.

A leaf module (no imports beyond the standard library) so that models and migrations can use it cheaply.
"""

from __future__ import annotations

SCENE = "scene"
REGION = "region"
OBJECT = "object"
PART = "part"
TEXTURE = "texture"
COLOR = "color"

CATEGORIES: tuple[tuple[str, str], ...] = (
    (SCENE, "Scene"),
    (REGION, "Region or surface"),
    (OBJECT, "Object"),
    (PART, "Object part"),
    (TEXTURE, "Texture or material"),
    (COLOR, "Simple elements or colors"),
)
CODES: tuple[str, ...] = tuple(code for code, _ in CATEGORIES)
LABELS: dict[str, str] = dict(CATEGORIES)
