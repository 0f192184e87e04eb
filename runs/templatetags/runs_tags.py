"""Template filters for the run pages (and any page that shows a unit's concept)."""

from __future__ import annotations

import re

from django import template

from runs import selectors

register = template.Library()

# Broden marks colours "-c" and scenes "-s" ("white-c", "meadow-s"): a tag for the data, noise to a reader.
# The same suffixes `agreement.words.dissection_word` drops before comparing labels.
_BRODEN_SUFFIX = re.compile(r"-[cs]$")


@register.filter
def concept_display(label: object) -> str:
    """A concept label as people read it: "white-c" -> "white", "meadow-s" -> "meadow"; the stored label
    keeps its suffix."""
    return _BRODEN_SUFFIX.sub("", str(label or "").strip())


@register.filter
def eta(seconds: int | None) -> str:
    """A stored ETA as the run page says it ("about 3 min left", "estimating…")."""
    return selectors.eta_display(seconds)
