"""The six concept categories of the ICLR 2015 protocol, shared by the ORM, forms and the statistics.

Plain Python (no Django import) so that `annotate/comparison.py` and `dissection/` users can rely on it.
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
