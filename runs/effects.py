"""Causal effects of a finished generator run (GAN Dissection's tests, `dissection.gan.effects`): for the
concepts its units match best, ablation and insertion of their top units beside random units of the same
layer, plotted and stored under runs/<id>/effects/; the run's report lists them ("gan_effects") for the run
page. Progress goes to a `Job` of the run's project."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.urls import reverse

from dissection.errors import DissectionError
from dissection.gan.dissect import concept_ranking
from dissection.gan.effects import causal_effects
from dissection.gan.plots import before_after_grid, effect_plot
from runs import services
from runs.models import DissectionRun
from runs.networks import network_generator, network_segmenter
from runs.storage import report_prefix, store_file

REPORT_KEY = "gan_effects"
REGION = (0.25, 0.25, 0.75, 0.75)


def effects_job_key(run_id: int) -> str:
    return f"gan-effects-{run_id}"


def top_concepts(document: dict[str, Any], count: int) -> list[str]:
    """The `count` concepts of a gan.json with the highest best-unit IoU (ties: gan.json order), IoU > 0."""
    best = [
        (max(entry["iou"], default=0.0), -i, entry["label"]) for i, entry in enumerate(document["concepts"])
    ]
    return [label for iou, _, label in sorted(best, reverse=True)[:count] if iou > 0]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "concept"


CONCEPTS, SAMPLES, LIMIT, CONTROLS = 3, 64, 8, 3
"""What the worker's task computes: the top concepts, samples, largest unit set and random sets per size."""


def gan_effects_build(
    *,
    run_id: int,
    concepts: int | None = None,
    samples: int | None = None,
    limit: int | None = None,
    controls: int | None = None,
) -> list[dict[str, Any]]:
    """Compute, plot and store the effects of the top `concepts` concepts of every layer of a finished
    generator run on `samples` samples of its seed (at most the run's); records them in the run's report and
    returns the entries (those already recorded, if any). A failure is recorded on the job and in the report
    ("gan_effects_error")."""
    run = DissectionRun.objects.select_related("network", "segmenter", "project").get(pk=run_id)
    if run.status != DissectionRun.Status.DONE or run.segmenter is None or run.network is None:
        raise DissectionError(f"run {run.name!r}: causal effects need a finished generator run")
    if REPORT_KEY in run.report:
        built: list[dict[str, Any]] = run.report[REPORT_KEY]
        return built
    job = services.job_begin(
        project=run.project, key=effects_job_key(run.pk), title=f"Causal effects of run {run.name}"
    )
    try:
        entries = _build(
            run,
            job.pk,
            concepts or CONCEPTS,
            min(samples or SAMPLES, run.samples),
            limit or LIMIT,
            controls or CONTROLS,
        )
    except Exception as exc:
        services.job_fail(job_id=job.pk, error=str(exc))
        services.run_set_report(run_id=run.pk, key=f"{REPORT_KEY}_error", value=str(exc))
        raise
    services.run_set_report(run_id=run.pk, key=REPORT_KEY, value=entries)
    services.job_finish(job_id=job.pk, link=reverse("runs:run_detail", args=[run.pk]))
    return entries


def _build(
    run: DissectionRun, job_id: int, count: int, samples: int, limit: int, controls: int
) -> list[dict[str, Any]]:
    assert run.network is not None and run.segmenter is not None
    generator = network_generator(run.network, device="auto")
    plan: list[tuple[str, dict[str, Any], str]] = []
    for layer in run.layers:
        with default_storage.open(f"{report_prefix(run.pk, layer)}/gan.json", "rb") as handle:
            document = json.load(handle)
        plan.extend((layer, document, concept) for concept in top_concepts(document, count))
    entries = []
    for step, (layer, document, concept) in enumerate(plan):
        services.job_progress(job_id=job_id, done=step, total=len(plan), note=f"{concept} in {layer}")
        entry, ranking = concept_ranking(document, concept)
        segmenter = network_segmenter(
            run.segmenter, mask_size=tuple(document["mask_size"]), device=generator.device.type
        )

        def progress(done: int, total: int, step: int = step, concept: str = concept) -> None:
            share = done / max(total, 1)
            services.job_progress(
                job_id=job_id, done=step * 100 + int(99 * share), total=len(plan) * 100, note=concept
            )

        effects, images = causal_effects(
            generator,
            segmenter,
            layer=layer,
            concept=entry,
            ranking=np.asarray(ranking),
            samples=samples,
            seed=run.seed,
            limit=limit,
            controls=controls,
            region=REGION,
            grid=6,
            progress=progress,
        )
        prefix = f"runs/{run.pk}/effects/{_slug(layer)}/{step:02d}-{_slug(concept)}"
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            stored = {"plot": store_file(f"{prefix}/effect.png", effect_plot(effects, folder / "effect.png"))}
            grid = before_after_grid(
                images["ablation_before"], images["ablation_after"], folder / "ablation.png"
            )
            stored["ablation"] = store_file(f"{prefix}/ablation.png", grid)
            if "insertion_before" in images:
                grid = before_after_grid(
                    images["insertion_before"],
                    images["insertion_after"],
                    folder / "insertion.png",
                    region=list(REGION),
                )
                stored["insertion"] = store_file(f"{prefix}/insertion.png", grid)
            (folder / "effects.json").write_text(json.dumps(effects, indent=1))
            stored["document"] = store_file(f"{prefix}/effects.json", folder / "effects.json")
        entries.append(
            {
                "layer": layer,
                "concept": concept,
                "category": entry["category"],
                **stored,
                "summary": effect_summary(effects),
            }
        )
    return entries


def effect_summary(effects: dict[str, Any]) -> str:
    """One sentence: the largest set's ablation and insertion beside the random control."""
    last = effects["curves"][-1]
    concept, n = effects["concept"], last["units"]
    text = (
        f"Removing the top {n} unit{'s' if n != 1 else ''} lowers the share of {concept} pixels by "
        f"{last['ablation']['mean']:.1%} (random units: {last['ablation_control']['mean']:.1%})"
    )
    if last["insertion"] is not None:
        text += (
            f"; inserting them makes {last['insertion']['mean']:.1%} of the region {concept} "
            f"(random units: {last['insertion_control']['mean']:.1%})"
        )
    return text + "."
