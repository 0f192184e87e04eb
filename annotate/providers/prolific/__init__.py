"""Prolific: the batch link is the study URL; Prolific appends PROLIFIC_PID, STUDY_ID and SESSION_ID, and a
finished worker is sent back to Prolific's completion URL with the study's completion code.

Payment, approval and blocking happen in Prolific's own interface, so they are recorded here only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from django.conf import settings

from annotate.providers.base import CrowdProvider, ProviderError

if TYPE_CHECKING:
    from annotate.models import Batch

PARAM_WORKER = "PROLIFIC_PID"
PARAM_STUDY = "STUDY_ID"
PARAM_SESSION = "SESSION_ID"


class ProlificProvider(CrowdProvider):
    name = "prolific"

    def check_publishable(self, batch: Batch) -> None:
        if not batch.prolific_completion_code.strip():
            raise ProviderError("a Prolific batch needs the study's completion code before it is published")

    def completion_url(self, batch: Batch) -> str:
        return f"{settings.PROLIFIC_COMPLETION_URL}?{urlencode({'cc': batch.prolific_completion_code})}"
