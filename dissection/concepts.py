"""Concept labels as people read them. Broden marks colours "-c" and scenes "-s" ("white-c", "meadow-s"): a
tag for the data, noise to a reader. Reports, summaries and captions show the label without it; result.json
and tally.csv keep the stored label (the service's pages do the same through `runs_tags.concept_display`)."""

from __future__ import annotations

import re

_BRODEN_SUFFIX = re.compile(r"-[cs]$")


def concept_display(label: str) -> str:
    """`label` without Broden's suffix: "white-c" -> "white", "meadow-s" -> "meadow", "door" -> "door"."""
    return _BRODEN_SUFFIX.sub("", label)
