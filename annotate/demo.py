"""The demo content `make run` shows, on the demo assets of runs.demo (a synthetic probe set and a toy
network, cached under var/demo): a real dissection run through the workers (a worker thread in this process by
default), a local batch made from its units with two gold units whose answers come from the probe set's ground
truth, a simulated crowd's answers to part of it and to a blind verification batch, the requester's first
decisions (so the batch page's audit trail has some) and a qualification one worker passed and one failed."""

from __future__ import annotations

import io
import os
import secrets
from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.contrib.auth import get_user_model

from annotate.models import Annotation, Assignment, Batch, CrowdWorker, Qualification
from annotate.services import (
    GoldAnswer,
    assignment_approve,
    assignment_send_bonus,
    batch_create,
    batch_publish,
)
from annotate.services.comparison import comparison_refresh
from annotate.services.qualifications import (
    batch_qualifications_set,
    qualification_answer_submit,
    qualification_create,
)
from annotate.services.verification import verification_batch_create
from annotate.simulation import crowd_simulate
from runs.demo import (
    DEMO_RUN,
    demo_project,
    demo_registered,
)
from runs.follow import follow_run
from runs.models import DissectionRun, Unit
from runs.services import run_launch
from workers.inprocess import in_process_worker, needs_in_process_worker

PASSWORD_FILE = "demo-password"


def demo_password() -> str:
    """DEMO_PASSWORD, else the one an earlier run stored under var/, else a new one (then stored)."""
    if os.environ.get("DEMO_PASSWORD"):
        return os.environ["DEMO_PASSWORD"]
    path = Path(settings.BASE_DIR) / "var" / PASSWORD_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


RUN_LAYERS = ("conv3", "conv4")
RUN_TOPK = 12
RUN_SHARD_SIZE = 40
BATCH_UNITS = 12
# Broden-style categories of the synthetic probe set -> the six human categories of the worker form.
HUMAN_CATEGORY = {
    "color": "color",
    "object": "object",
    "part": "part",
    "material": "texture",
    "scene": "scene",
    "texture": "texture",
}


DEMO_USERNAME = "requester"
DEMO_BATCH = "Label the units of the demo run"
DEMO_VERIFICATION = "Verify the labels of the demo run"
DEMO_QUALIFICATION = "Demo screening: the gold units"
# The simulated crowd answers this many of the demo batch's 12 x 3 slots, leaving some for a person to try:
# tasks fill in order, so nine units get their three answers, one unit gets one (below the comparison's
# minimum of two: it is shown apart) and two get none.
DEMO_SIMULATED_ANSWERS = 28
DEMO_APPROVED = 2
"""Simulated answers the demo requester approves (the first of them with a bonus), for the audit trail."""


class DemoError(RuntimeError):
    """The demo dissection did not finish (its message says why)."""


@dataclass
class DemoContent:
    user: Any
    username: str
    password: str
    batch: Batch
    run: DissectionRun


def demo_run_build(*, progress: TextIO | None = None) -> DissectionRun:
    """The finished demo run, dissecting conv3 and conv4 through the workers unless one is done already."""
    run = DissectionRun.objects.filter(name=DEMO_RUN).first()
    if run is not None and run.status == DissectionRun.Status.DONE:
        return run
    if run is not None:  # failed, cancelled, or queued in a broker that died with its process
        run.delete()
    project = demo_project()
    network, probe_set = demo_registered(project, progress)
    with in_process_worker() if needs_in_process_worker() else nullcontext():
        run = run_launch(
            project=project,
            name=DEMO_RUN,
            network=network,
            probe_set=probe_set,
            layers=list(RUN_LAYERS),
            shard_size=RUN_SHARD_SIZE,
            topk=RUN_TOPK,
        )
        run = follow_run(run, stream=progress or io.StringIO())
    if run.status != DissectionRun.Status.DONE:
        raise DemoError(f"the demo run {run.status}: {run.error}")
    return run


def demo_gold(units: list[Unit]) -> dict[int, GoldAnswer]:
    """Two gold units: the interpretable units with the highest IoU (distinct labels); the accepted answer is
    the label the probe set's ground truth gives them, in the matching human category."""
    gold: dict[int, GoldAnswer] = {}
    labels: set[str] = set()
    for unit in sorted(units, key=lambda u: (-(u.iou or 0.0), u.layer, u.channel)):
        if unit.interpretable and unit.label not in labels and unit.concept_category in HUMAN_CATEGORY:
            gold[unit.pk] = GoldAnswer(HUMAN_CATEGORY[unit.concept_category], (unit.label,))
            labels.add(unit.label)
        if len(gold) == 2:
            break
    return gold


def demo_batch_units(run: DissectionRun) -> tuple[list[Unit], dict[int, GoldAnswer]]:
    """The demo batch's units: both layers taking turns, each turn the layer's strongest unit of a concept
    category not in the batch yet, else of a label not in it yet, else its strongest, so that every plot of
    the comparison has layers, categories and concepts to compare; the two gold units sit at positions 1
    and 4."""
    candidates = list(run.units.filter(layer__in=RUN_LAYERS))
    gold = demo_gold(candidates)
    ranked = sorted(candidates, key=lambda u: (-(u.iou or 0.0), u.layer, u.channel))
    remaining = {layer: [u for u in ranked if u.layer == layer and u.pk not in gold] for layer in RUN_LAYERS}
    golden = [u for u in ranked if u.pk in gold]
    categories = {u.concept_category for u in golden}
    labels = {u.label for u in golden}
    chosen: list[Unit] = []
    while len(chosen) < BATCH_UNITS - len(gold) and any(remaining.values()):
        for units in remaining.values():
            if not units or len(chosen) == BATCH_UNITS - len(gold):
                continue
            pick = next((u for u in units if u.concept_category not in categories), None) or next(
                (u for u in units if u.label not in labels), units[0]
            )
            units.remove(pick)
            chosen.append(pick)
            categories.add(pick.concept_category)
            labels.add(pick.label)
    for position, unit in zip((1, 4), golden, strict=False):  # gold units sit among the others
        chosen.insert(position, unit)
    return chosen, gold


def demo_content_build(*, password: str, progress: TextIO | None = None) -> DemoContent:
    """Idempotently: the demo requester, the demo run (dissected if missing) and a published local batch of
    units of both layers with two gold units."""
    user, _ = get_user_model().objects.get_or_create(
        username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    user.is_staff = True
    user.set_password(password)
    user.save()
    demo_project().members.add(user)
    run = demo_run_build(progress=progress)
    batch = (
        Batch.objects.filter(title=DEMO_BATCH, created_by=user)
        .exclude(state__in=[Batch.State.CANCELLED, Batch.State.FINISHED])
        .first()
    )
    if batch is None:
        chosen, gold = demo_batch_units(run)
        batch = batch_create(
            title=DEMO_BATCH,
            units=chosen,
            gold=gold,
            created_by=user,
            assignments_per_task=3,
            images_per_task=RUN_TOPK,
            reward=Decimal("0.05"),
            instructions="Look at the highlighted regions. What do most of them show?",
        )
    if batch.state in (Batch.State.DRAFT, Batch.State.PAUSED):
        batch_publish(batch=batch, actor=user)
    demo_crowd_answer(batch=batch, user=user)
    demo_qualification(batch=batch, user=user)
    return DemoContent(user=user, username=DEMO_USERNAME, password=password, batch=batch, run=run)


def demo_qualification(*, batch: Batch, user: object) -> None:
    """Once: a qualification of the batch's gold units, required by the batch (after the simulated crowd,
    so new visitors take the test first), and two simulated workers' results, one passed and one failed."""
    if batch.qualifications.filter(name=DEMO_QUALIFICATION).exists():
        return
    gold_tasks = list(batch.tasks.filter(is_gold=True).order_by("position"))
    qualification = Qualification.objects.filter(project=batch.project, name=DEMO_QUALIFICATION).first()
    if qualification is None:
        qualification = qualification_create(
            project=batch.project,
            name=DEMO_QUALIFICATION,
            gold={t.unit_id: GoldAnswer(t.gold_category, tuple(t.gold_words)) for t in gold_tasks},
            min_accuracy=1.0,
            min_items=len(gold_tasks),
            images_per_item=batch.images_per_task,
            actor=user,
        )
    batch_qualifications_set(batch=batch, qualifications=[qualification], actor=user)
    workers = CrowdWorker.objects.filter(assignments__task__batch=batch).distinct().order_by("pk")[:2]
    for passes, worker in zip((True, False), workers, strict=False):
        for item in qualification.items.order_by("position"):
            category = item.gold_category if passes else "scene" if item.gold_category != "scene" else "color"
            qualification_answer_submit(
                qualification=qualification,
                worker=worker,
                item=item,
                words=" ".join(item.gold_words[0].split()[:2]),
                category=category,
            )


def demo_crowd_answer(*, batch: Batch, user: object) -> None:
    """Once: a simulated crowd (one spammer among eight) answers part of the demo batch through the worker
    pages, and a blind verification batch of its labels is published and answered, so the comparison
    dashboard has every table and plot to show; its figures are computed now, so the first view is quick."""
    if Annotation.objects.filter(assignment__task__batch=batch).exists():
        return
    crowd_simulate(batch=batch, workers=8, spammers=1, accuracy=0.8, limit=DEMO_SIMULATED_ANSWERS, seed=0)
    verification = verification_batch_create(batch=batch, title=DEMO_VERIFICATION, created_by=user)
    batch_publish(batch=verification, actor=user)
    crowd_simulate(batch=verification, workers=5, spammers=0, accuracy=0.85, seed=1)
    comparison_refresh(batch=batch, aggregation="dawid_skene")
    demo_review(batch=batch, user=user)


def demo_review(*, batch: Batch, user: object) -> None:
    """The requester's first decisions on the simulated answers, recorded in the batch's audit trail: two
    answers approved, one of them with a bonus (approvals leave the comparison's inputs as they were)."""
    first = Assignment.objects.filter(
        task__batch=batch, task__is_gold=False, status=Assignment.Status.SUBMITTED, verified=True
    ).order_by("pk")[:DEMO_APPROVED]
    approved = [assignment_approve(assignment=a, feedback="Thank you.", actor=user) for a in first]
    if approved:
        assignment_send_bonus(
            assignment=approved[0], amount=Decimal("0.02"), reason="A careful answer.", actor=user
        )
