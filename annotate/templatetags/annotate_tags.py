"""Template filters for the annotation pages."""

from __future__ import annotations

from collections.abc import Iterable

from django import template

register = template.Library()


@register.filter
def image_numbers(ranks: Iterable[int]) -> str:
    """0-based image ranks as the 1-based numbers workers see on the tiles: [0, 3] -> '1, 4'."""
    return ", ".join(str(rank + 1) for rank in ranks)
