"""The demo's 2AFC study: a batch on the demo run's last layer (natural references against none, plus
feature visualizations and both when the featviz extra made them for those units), partly answered by the
model crowd, so the comparison page shows its results from the first `make run`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import reverse

from annotate.demo import DEMO_RUN, RUN_LAYERS
from annotate.models import Batch
from annotate.services import batch_publish
from annotate.services.twoafc import TwoAfcSettings, twoafc_batch_create
from annotate.simulation import twoafc_crowd_simulate
from runs.featviz import featviz_keys
from runs.models import DissectionRun, Project, Unit

DEMO_TWOAFC = "2AFC: which image activates the unit more? (demo)"
STUDY_UNITS = 12
CATCH_TRIALS = 2
ASSIGNMENTS = 4
SIMULATED_WORKERS = 3
"""Three model workers take every study unit and both catch trials once: 42 of the 56 places, the rest left
for a person to try."""
REFERENCES = 9


def _study_units(run: DissectionRun) -> tuple[list[Unit], tuple[str, ...]]:
    """The last layer's strongest units by IoU; the featviz conditions too when every one of them has
    feature visualizations."""
    layer = RUN_LAYERS[-1]
    units = list(run.units.filter(layer=layer).order_by("-iou", "channel"))
    with_featviz = [unit for unit in units if featviz_keys(unit=unit)]
    if len(with_featviz) >= STUDY_UNITS:
        return with_featviz[:STUDY_UNITS], ("natural", "featviz", "both", "none")
    return units[:STUDY_UNITS], ("natural", "none")


def demo_twoafc_build(*, project: Project, user: Any, progress: Callable[[int, int, str], None]) -> str:
    """Make the demo's 2AFC batch on the demo run once, publish it and have the model crowd answer part of
    it; the batch's comparison page's URL. Cheap when the batch exists."""
    batch = Batch.objects.filter(project=project, title=DEMO_TWOAFC).first()
    if batch is None:
        run = DissectionRun.objects.filter(
            project=project, name=DEMO_RUN, status=DissectionRun.Status.DONE
        ).first()
        if run is None:
            raise RuntimeError(
                f"the demo run {DEMO_RUN!r} is not done yet; the 2AFC study is made on its units"
            )
        units, conditions = _study_units(run)
        progress(0, 3, "activations of the study's units over the probe set")
        batch = twoafc_batch_create(
            title=DEMO_TWOAFC,
            units=units,
            settings=TwoAfcSettings(
                conditions=conditions, references=REFERENCES, catch_trials=CATCH_TRIALS, seed=0
            ),
            instructions="Look at what the unit responds to (when shown), then pick the image that activates "
            "it more. Use 1 / 2 or the arrow keys to pick, 1–3 for how sure you are, Enter to submit.",
            assignments_per_task=ASSIGNMENTS,
            project=project,
            created_by=user,
        )
        batch_publish(batch=batch, actor=user)
        progress(1, 3, "the model crowd answers")
        twoafc_crowd_simulate(batch=batch, workers=SIMULATED_WORKERS, seed=0)
    progress(3, 3, "")
    return reverse("annotate:batch_comparison", args=[batch.public_id])
