"""Template filters for the run pages (and any page that shows a unit's concept)."""

from __future__ import annotations

from django import template

from dissection import concepts
from runs import selectors

register = template.Library()


@register.filter
def concept_display(label: object) -> str:
    """A concept label as people read it (`dissection.concepts`): "white-c" -> "white", "meadow-s" ->
    "meadow"; the stored label keeps its suffix. The same suffixes `agreement.words.dissection_word` drops
    before comparing labels."""
    return concepts.concept_display(str(label or "").strip())


@register.filter
def eta(seconds: int | None) -> str:
    """A stored ETA as the run page says it ("about 3 min left", "estimating…")."""
    return selectors.eta_display(seconds)
