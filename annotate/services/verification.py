"""Blind verification batches (NetDissect's human evaluation): does a label describe most of a unit's images,
with the label's source (people or dissection) hidden from the worker."""

from __future__ import annotations

import random
from typing import Any

from django.db import transaction

from agreement.words import dissection_word
from annotate import selectors
from annotate.errors import DuplicateVerification, InvalidAnswer
from annotate.models import Batch, Task
from annotate.selectors import comparison as comparison_selectors
from runs.access import may_use_project
from runs.models import Unit

VERIFY_INSTRUCTIONS = (
    "Look at the highlighted regions of the images. Then say whether the label describes most of them."
)
TITLE_MAX = 200
YES, NO = "yes", "no"


def verification_batch_create(
    *,
    batch: Batch,
    title: str = "",
    assignments_per_task: int | None = None,
    seed: int = 0,
    created_by: Any = None,
) -> Batch:
    """A draft batch with two verify tasks per unit of `batch` that has both a human consensus word and a
    dissection label: one shows the consensus, one the dissection label, in a seeded shuffled order.

    Both candidates are shown in the same normalized form (lowercase, lemmatized, Broden suffix dropped) so
    that nothing in the label tells a worker where it came from. Pay, time limits, images per task,
    provider and project are the source batch's; `created_by` must be a member of that project.

    One verification batch per source: while one that is not cancelled exists, a second call raises
    DuplicateVerification naming it (the source row is locked, so two concurrent calls make one batch).
    """
    if not may_use_project(created_by, batch.project):
        raise InvalidAnswer(f"Project: you are not a member of project {batch.project.name!r}.")
    if not batch.tasks.filter(kind=Task.Kind.LABEL).exists():
        raise InvalidAnswer(f"Batch {batch.title!r} has no labelling tasks to verify.")
    with transaction.atomic():
        Batch.objects.select_for_update().filter(pk=batch.pk).first()
        existing = selectors.batch_verification(batch=batch)
        if existing is not None:
            raise DuplicateVerification(
                f"Batch {batch.title!r} already has a verification batch, {existing.title!r} "
                f"({existing.get_state_display().lower()}); open it, or cancel it before making another.",
                existing=existing,
            )
        candidates = _candidates(batch)
        random.Random(seed).shuffle(candidates)
        verification = Batch(
            project=batch.project,
            title=(title.strip() or f"Verify labels: {batch.title}")[:TITLE_MAX],
            instructions=VERIFY_INSTRUCTIONS,
            provider=batch.provider,
            assignments_per_task=(
                assignments_per_task if assignments_per_task is not None else batch.assignments_per_task
            ),
            images_per_task=batch.images_per_task,
            reward=batch.reward,
            assignment_duration=batch.assignment_duration,
            lifetime=batch.lifetime,
            prolific_completion_code=batch.prolific_completion_code,
            created_by=created_by,
            verifies=batch,
        )
        verification.full_clean()
        verification.save()
        Task.objects.bulk_create(
            [
                Task(
                    batch=verification,
                    unit=unit,
                    position=position,
                    kind=Task.Kind.VERIFY,
                    candidate_label=label[:200],
                    candidate_source=source,
                )
                for position, (unit, source, label) in enumerate(candidates)
            ]
        )
    return verification


def _candidates(batch: Batch) -> list[tuple[Unit, str, str]]:
    """(unit, source, label) twice per unit of `batch` with both a consensus word and a dissection label."""
    consensus = comparison_selectors.batch_consensus_words(batch=batch)
    candidates: list[tuple[Unit, str, str]] = []
    for unit in comparison_selectors.batch_units(batch=batch):
        label, _, _ = comparison_selectors.unit_dissection(unit)
        if unit.pk in consensus and label is not None:
            candidates.append((unit, Task.CandidateSource.HUMAN, consensus[unit.pk]))
            candidates.append((unit, Task.CandidateSource.DISSECTION, dissection_word(label)))
    if not candidates:
        raise InvalidAnswer(
            f"Batch {batch.title!r}: no unit has both a human consensus word and a dissection label yet."
        )
    return candidates
