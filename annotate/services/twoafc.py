"""2AFC batches: create one from units (query pairs chosen from the unit's activations over the probe set),
serve a trial to a worker (its condition and sides from the seeded design) and store the answer once.

The query rule is `agreement.twoafc.query_pair`: references are the unit's top natural images (its stored
ranks 0..r-1), the strong query is drawn from the top `strong_quantile` of the probe set below them, the weak
one from its bottom `weak_quantile`. The run's stored top-k cannot give the weakest images, so creating a
batch computes each unit's per-image maximum activation over the whole probe set with one forward pass of
the run's network per layer (`unit_activations`); the chosen pair and its activations are kept on the task.
Catch trials are extra units of the same layers (not in the study) with the obvious pair under natural
references; they are the batch's gold units and score a worker's gold accuracy as label gold does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from agreement import twoafc
from annotate.errors import InvalidAnswer
from annotate.models import Annotation, Assignment, Batch, Provider, Task
from annotate.selectors.twoafc import trial_view
from annotate.services.assignments import (
    SubmitOutcome,
    _block,
    _score_gold,
    _verify_at_provider,
    assignment_expire_overdue,
    assignment_lock_for_answer,
)
from annotate.services.batches import batch_create
from annotate.services.comparison import comparison_inputs_changed
from runs.featviz import featviz_keys
from runs.models import DissectionRun, Project, Unit

Status = Assignment.Status
FEATVIZ_CONDITIONS = ("featviz", "both")
NATURAL_CONDITIONS = ("natural", "both")


@dataclass(frozen=True)
class TwoAfcSettings:
    """A 2AFC batch's study settings (kept as JSON on the batch)."""

    conditions: tuple[str, ...] = ("natural", "none")
    references: int = 9
    strong_quantile: float = 0.05
    weak_quantile: float = 0.05
    catch_trials: int = 0
    seed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "conditions": list(self.conditions)}


def twoafc_settings(batch: Batch) -> TwoAfcSettings:
    """The batch's stored settings."""
    stored = dict(batch.twoafc)
    stored["conditions"] = tuple(stored.get("conditions", ()))
    return TwoAfcSettings(**stored)


def unit_activations(*, units: Sequence[Unit]) -> dict[int, np.ndarray]:
    """unit pk -> its per-image maximum activation over its run's whole probe set (index = probe row), from
    one forward pass of the run's network per layer; InvalidAnswer naming the run when it has neither."""
    from dissection.broden import load_probe_set
    from dissection.sources import ModelActivations
    from runs.networks import network_model
    from runs.storage import probe_set_root

    result: dict[int, np.ndarray] = {}
    by_layer: dict[tuple[int, str], list[Unit]] = {}
    for unit in units:
        by_layer.setdefault((unit.run_id, unit.layer), []).append(unit)
    for (run_id, layer), members in by_layer.items():
        run = DissectionRun.objects.select_related("network", "probe_set").get(pk=run_id)
        if run.network is None or run.probe_set is None:
            raise InvalidAnswer(
                f"Units: run {run.name!r} has no network or probe set, so its units' activations over the "
                "probe set (which the query images come from) cannot be computed."
            )
        probe = load_probe_set(probe_set_root(run.probe_set))
        source = ModelActivations(network_model(run.network), [layer], workers=0)
        maxima = np.concatenate(
            [
                outputs[layer].amax(dim=(2, 3)).cpu().numpy()
                for _, outputs in source.batches(probe, np.arange(len(probe)), batch_size=32)
            ]
        )
        for unit in members:
            result[unit.pk] = maxima[:, unit.channel]
    return result


def _reference_rows(unit: Unit, references: int, names: dict[str, int]) -> set[int]:
    """Probe rows of the unit's stored top images shown as references (matched by the source image name)."""
    sources = unit.images.order_by("rank").values_list("source_image", flat=True)[:references]
    return {names[name] for name in sources if name in names}


def _probe_names(run: DissectionRun) -> dict[str, int]:
    from dissection.broden import load_probe_set
    from runs.storage import probe_set_root

    if run.probe_set is None:
        return {}
    probe = load_probe_set(probe_set_root(run.probe_set))
    return {image.image: image.row for image in probe.images}


def _pair(
    activations: np.ndarray, exclude: set[int], settings: TwoAfcSettings, key: str, *, catch: bool
) -> twoafc.QueryPair:
    """`query_pair` on the unit's activations with the stored references moved to the very top, so they
    are the references the rule skips even where the stored ranking and this forward pass tie differently."""
    values = np.asarray(activations, dtype=np.float64).copy()
    ceiling = float(values.max()) + 1.0 if len(values) else 0.0
    for row in exclude:
        values[row] = ceiling
    pair = twoafc.query_pair(
        list(values),
        references=max(settings.references, len(exclude)),
        strong_quantile=settings.strong_quantile,
        weak_quantile=settings.weak_quantile,
        seed=f"{settings.seed}|{key}",
        catch=catch,
    )
    return twoafc.QueryPair(
        pair.strong, pair.weak, float(activations[pair.strong]), float(activations[pair.weak])
    )


def _validate(settings: TwoAfcSettings, units: Sequence[Unit]) -> None:
    if not settings.conditions:
        raise InvalidAnswer("Conditions: pick at least one condition.")
    unknown = [c for c in settings.conditions if c not in twoafc.CONDITIONS]
    if unknown:
        raise InvalidAnswer(f"Conditions: {unknown[0]!r} is not one of {', '.join(twoafc.CONDITIONS)}.")
    if len(set(settings.conditions)) != len(settings.conditions):
        raise InvalidAnswer("Conditions: each condition once.")
    if not 1 <= settings.references <= 100:
        raise InvalidAnswer("Reference images: between 1 and 100.")
    for name in ("strong_quantile", "weak_quantile"):
        value = getattr(settings, name)
        if not 0 < value < 0.5:
            raise InvalidAnswer(f"{name.replace('_', ' ').capitalize()}: between 0 and 0.5, got {value}.")
    if settings.catch_trials < 0:
        raise InvalidAnswer("Catch trials: 0 or more.")
    if len(units) < len(settings.conditions):
        raise InvalidAnswer(
            f"Units: {len(units)} unit(s) for {len(settings.conditions)} conditions; a worker must be able "
            "to see every condition, each on another unit."
        )
    if any(c in NATURAL_CONDITIONS for c in settings.conditions):
        short = [u for u in units if u.images.count() < settings.references]
        if short:
            raise InvalidAnswer(
                f"Reference images: {short[0].layer} unit {short[0].number} has fewer than "
                f"{settings.references} top images."
            )
    if any(c in FEATVIZ_CONDITIONS for c in settings.conditions):
        bare = [u for u in units if not featviz_keys(unit=u)]
        if bare:
            raise InvalidAnswer(
                f"Conditions: {bare[0].layer} unit {bare[0].number} has no feature visualizations; make them "
                "first or leave out the featviz and both conditions."
            )


def _catch_units(units: Sequence[Unit], settings: TwoAfcSettings) -> list[Unit]:
    """`catch_trials` other units of the study's run and layers, in a seeded order."""
    if not settings.catch_trials:
        return []
    pool = list(
        Unit.objects.filter(run_id=units[0].run_id, layer__in={u.layer for u in units})
        .exclude(pk__in=[u.pk for u in units])
        .order_by("layer", "channel")
    )
    if len(pool) < settings.catch_trials:
        raise InvalidAnswer(
            f"Catch trials: {settings.catch_trials} asked, but only {len(pool)} other unit(s) of the study's "
            "layers are left to use for them."
        )
    random.Random(f"catch|{settings.seed}").shuffle(pool)
    return pool[: settings.catch_trials]


def twoafc_batch_create(
    *,
    title: str,
    units: Sequence[Unit],
    settings: TwoAfcSettings,
    instructions: str = "",
    provider: str = Provider.LOCAL,
    assignments_per_task: int = 3,
    reward: Decimal = Decimal("0.10"),
    assignment_duration: timedelta = timedelta(minutes=30),
    lifetime: timedelta = timedelta(days=7),
    auto_reject_failed_gold: bool = False,
    block_below_accuracy: float | None = None,
    block_min_gold: int = 2,
    prolific_completion_code: str = "",
    project: Project | None = None,
    created_by: Any = None,
) -> Batch:
    """A draft 2AFC batch: one trial task per unit (study units first, catch units spread among them), each
    with its references and query pair; nothing is written when a setting or a unit does not fit."""
    if provider == Provider.MTURK:
        raise InvalidAnswer("Provider: 2AFC trials run on the local link or Prolific, not in MTurk's frame.")
    study = list(dict.fromkeys(units))
    if not study:
        raise InvalidAnswer("Units: the selection is empty.")
    if len({u.run_id for u in study}) > 1:
        raise InvalidAnswer("Units: a 2AFC batch holds units of one run (one probe set).")
    _validate(settings, study)
    catch = _catch_units(study, settings)
    activations = unit_activations(units=study + catch)
    names = _probe_names(study[0].run)
    pairs: dict[int, dict[str, Any]] = {}
    for unit in study + catch:
        exclude = _reference_rows(unit, settings.references, names)
        try:
            pair = _pair(activations[unit.pk], exclude, settings, str(unit.pk), catch=unit in catch)
        except ValueError as exc:
            raise InvalidAnswer(f"Query images: {unit.layer} unit {unit.number}: {exc}.") from None
        pairs[unit.pk] = {**asdict(pair), "references": settings.references, "catch": unit in catch}
    order = list(study)
    rng = random.Random(f"catch-places|{settings.seed}")
    for unit in catch:  # gold units sit among the others, never first
        order.insert(rng.randint(1, len(order)), unit)
    with transaction.atomic():
        batch = batch_create(
            title=title,
            units=order,
            instructions=instructions,
            provider=provider,
            assignments_per_task=assignments_per_task,
            images_per_task=settings.references,
            reward=reward,
            assignment_duration=assignment_duration,
            lifetime=lifetime,
            auto_reject_failed_gold=auto_reject_failed_gold,
            block_below_accuracy=block_below_accuracy,
            block_min_gold=block_min_gold,
            prolific_completion_code=prolific_completion_code,
            project=project,
            created_by=created_by,
        )
        Batch.objects.filter(pk=batch.pk).update(task_type=Batch.TaskType.TWOAFC, twoafc=settings.as_json())
        study_position = 0
        for task in batch.tasks.order_by("position"):
            trial = pairs[task.unit_id]
            if not trial["catch"]:
                trial = {**trial, "study_position": study_position}
                study_position += 1
            task.kind = Task.Kind.TWOAFC
            task.is_gold = trial["catch"]
            task.twoafc = trial
            task.save(update_fields=["kind", "is_gold", "twoafc"])
    batch.refresh_from_db()
    return batch


def _worker_number(assignment: Assignment) -> int:
    """The worker's number in the batch's design: their earlier trials' number, else how many workers came
    before them (two newcomers at the same instant may share one: the balance bends, nothing breaks)."""
    trials = Assignment.objects.filter(task__batch_id=assignment.task.batch_id).exclude(trial={})
    own = trials.filter(worker_id=assignment.worker_id).values_list("trial", flat=True).first()
    if own is not None:
        return int(own["worker"])
    return trials.values("worker_id").distinct().count()


def twoafc_trial_serve(*, assignment: Assignment, now: datetime | None = None) -> Assignment:
    """Fix the trial of an accepted 2AFC assignment on first serving (condition and sides from the design)
    and when it was served, which the reaction time counts from; a reload changes neither."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = (
            Assignment.objects.select_for_update(of=("self",))
            .select_related("task__batch")
            .get(pk=assignment.pk)
        )
        if locked.trial and locked.served_at is not None:
            return locked
        task, batch = locked.task, locked.task.batch
        worker = _worker_number(locked)
        if task.twoafc.get("catch"):
            coin = random.Random(f"{batch.twoafc['seed']}|{worker}|{task.pk}").random()
            design = twoafc.TrialDesign(twoafc.CATCH, twoafc.LEFT if coin < 0.5 else twoafc.RIGHT)
        else:
            design = twoafc.trial_design(
                seed=int(batch.twoafc["seed"]),
                worker=worker,
                position=int(task.twoafc["study_position"]),
                positions=batch.tasks.filter(is_gold=False).count(),
                conditions=batch.twoafc["conditions"],
            )
        locked.trial = {"worker": worker, "condition": design.condition, "strong_side": design.strong_side}
        locked.served_at = now
        locked.save(update_fields=["trial", "served_at"])
    return locked


def _submit_once(assignment_id: int, choice: str, confidence: int, now: datetime) -> SubmitOutcome:
    assignment, stored = assignment_lock_for_answer(assignment_id=assignment_id)
    if stored is not None:
        return SubmitOutcome(stored, replay=True)
    task = assignment.task
    if task.kind != Task.Kind.TWOAFC or not assignment.trial or assignment.served_at is None:
        raise InvalidAnswer("Answer: this trial was never shown, so there is nothing to answer.")
    if choice not in (twoafc.LEFT, twoafc.RIGHT):
        raise InvalidAnswer("Choice: pick the left or the right image.")
    if confidence not in twoafc.CONFIDENCES:
        raise InvalidAnswer("Confidence: 1, 2 or 3.")
    annotation = Annotation.objects.create(
        assignment=assignment,
        choice=choice,
        confidence=confidence,
        correct=choice == assignment.trial["strong_side"],
        reaction_ms=max(0, int((now - assignment.served_at).total_seconds() * 1000)),
        time_spent_ms=max(0, int((now - assignment.accepted_at).total_seconds() * 1000)),
        shown_count=sum(astuple(trial_view(assignment=assignment))),
    )
    assignment.status = Status.SUBMITTED
    assignment.submitted_at = now
    block_reason = _score_gold(assignment, annotation, now) if assignment.verified else ""
    assignment.save()
    comparison_inputs_changed(unit_ids=[task.unit_id])
    return SubmitOutcome(annotation, replay=False, block_reason=block_reason)


def twoafc_answer_submit(
    *, assignment: Assignment, choice: str, confidence: int, now: datetime | None = None
) -> SubmitOutcome:
    """Store a 2AFC answer once (a replay returns the stored one): the choice, its confidence, whether it
    picked the strong query, and the reaction time from serving to now. A catch trial scores the worker's
    gold accuracy and may auto-reject and block, by the batch's rules, as label gold does."""
    now = now or timezone.now()
    assignment_expire_overdue(now=now, task=assignment.task)
    try:
        with transaction.atomic():
            outcome = _submit_once(assignment.pk, choice, confidence, now)
    except IntegrityError:
        stored = Annotation.objects.filter(assignment_id=assignment.pk).first()
        if stored is None:
            raise
        outcome = SubmitOutcome(stored, replay=True)
    if outcome.block_reason:
        _block(assignment.worker_id, outcome.block_reason, assignment.task.batch)
    _verify_at_provider(assignment.pk)
    return outcome
