"""The comparison dashboard served from its stored figures: page time at the median, against computing them.

Builds a batch of 500 units in two layers with dissection labels, answered 1,500 times (3 per unit) by a
simulated crowd of 12 people, 2 of them spammers (`agreement.simulation`'s answer model, stored through the
same services a worker's submit calls), then, in this one process, with Django's test client:

- the uncached compute: what a recomputation costs (the inputs read, `summarize` with its 1,000-resample
  bootstraps, the plots drawn), the median of a few;
- the dashboard page and a table download (units.csv), each the median (and p95) of many requests after
  the figures are stored: every request still checks, with a fingerprint of the inputs, that they are fresh.

Last line: `page_median_ms=<x> compute_median_ms=<y> speedup=<y/x> target_met=<bool>` (target: under
100 ms at the median). Settings are production's (DEBUG off); a throwaway SQLite database unless
DATABASE_URL is set.

    .venv/bin/python bench/dashboard.py [--units 500] [--requests 60]
    .venv/bin/python bench/dashboard.py --quick    # 40 units, a smoke test
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 100.0
LAYERS = ("conv3", "conv4")
IMAGES_PER_UNIT = 3
ANSWERS_PER_UNIT = 3
# (Broden label, Broden category): a spread of concepts, so every table and plot has something in it.
CONCEPTS = [
    ("dog", "object"),
    ("sky", "object"),
    ("wheel", "part"),
    ("wood", "material"),
    ("red-c", "color"),
    ("striped", "texture"),
    ("kitchen-s", "scene"),
    ("grass", "object"),
    ("window", "part"),
    ("green-c", "color"),
]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _timed(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--workers", type=int, default=12, help="simulated people (2 of them spammers)")
    parser.add_argument("--requests", type=int, default=60, help="timed page requests")
    parser.add_argument("--computes", type=int, default=3, help="timed uncached computations")
    parser.add_argument("--quick", action="store_true", help="40 units, 15 requests, 1 compute")
    args = parser.parse_args()
    if args.quick:
        args.units, args.requests, args.computes = 40, 15, 1
    work = Path(tempfile.mkdtemp(prefix="unitscope-dashboard-"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            "SECRET_KEY": "bench-dashboard-not-secret",
            "SECURE_SSL": "0",
            "MEDIA_ROOT": str(work / "media"),
            "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{work / 'db.sqlite3'}",
        }
    )
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    call_command("migrate", verbosity=0)
    batch, user = _build(args.units, args.workers)
    from annotate.models import Annotation, ComparisonSummary
    from annotate.services.comparison import comparison_refresh

    answers = Annotation.objects.filter(assignment__task__batch=batch).count()
    computes = _timed(lambda: comparison_refresh(batch=batch, aggregation="dawid_skene"), args.computes)
    stored = ComparisonSummary.objects.get(batch=batch, aggregation="dawid_skene")
    client = Client()
    client.force_login(get_user_model().objects.get(pk=user.pk))
    page = reverse("annotate:batch_comparison", args=[batch.public_id])
    export = reverse("annotate:batch_comparison_export", args=[batch.public_id, "units", "csv"])

    def get(url: str) -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")

    for _ in range(3):  # warm: templates compiled, the stored figures read once
        get(page)
    pages = _timed(lambda: get(page), args.requests)
    exports = _timed(lambda: get(export), max(5, args.requests // 4))
    stored.refresh_from_db()
    if ComparisonSummary.objects.get(pk=stored.pk).computed_at != stored.computed_at:
        raise SystemExit("a page view recomputed the figures: the cache did not hold")
    page_ms, compute_ms = statistics.median(pages), statistics.median(computes)
    print(
        f"units={args.units} answers={answers} layers={','.join(LAYERS)} workers={args.workers} "
        f"page_bytes={len(client.get(page).content)}"
    )
    print(f"compute_ms median={compute_ms:.0f} runs={len(computes)} (inputs, summarize, plots)")
    print(
        f"page_ms median={page_ms:.1f} p95={_percentile(pages, 0.95):.1f} requests={len(pages)}; "
        f"units.csv median={statistics.median(exports):.1f} ms"
    )
    print(
        f"page_median_ms={page_ms:.1f} compute_median_ms={compute_ms:.0f} speedup={compute_ms / page_ms:.0f} "
        f"target_met={'true' if page_ms < TARGET_MS else 'false'}"
    )


def _build(n_units: int, n_workers: int) -> tuple[Any, Any]:
    """A published batch of `n_units` units answered ANSWERS_PER_UNIT times each through the services."""
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from PIL import Image

    from agreement.broden import human_category_of
    from agreement.simulation import TrueUnit, make_crowd, simulate_answers
    from agreement.words import dissection_word
    from annotate import services
    from runs.models import DissectionRun, Unit, UnitImage
    from runs.services import project_get_or_create

    project = project_get_or_create(name="Benchmarks")
    user = get_user_model().objects.create_user("bench", password="bench-password-1234", is_staff=True)
    project.members.add(user)
    run = DissectionRun.objects.create(
        project=project, name="dashboard bench", status=DissectionRun.Status.DONE, layers=list(LAYERS)
    )
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    png = buffer.getvalue()
    rng = np.random.default_rng(0)
    units = []
    for index in range(n_units):
        label, category = CONCEPTS[int(rng.integers(len(CONCEPTS)))]
        iou = float(rng.uniform(0.0, 0.25))
        unit = Unit.objects.create(
            run=run,
            layer=LAYERS[index % len(LAYERS)],
            channel=index // len(LAYERS),
            label=label,
            concept_category=category,
            iou=iou,
            interpretable=iou > 0.04,
        )
        for rank in range(IMAGES_PER_UNIT):
            image = UnitImage(unit=unit, rank=rank, max_activation=10.0 - rank)
            image.image.save(f"{run.pk}/u{unit.pk}-{rank}.png", ContentFile(png), save=False)
            image.save()
        units.append(unit)
    batch = services.batch_create(
        title="Dashboard benchmark",
        units=units,
        assignments_per_task=ANSWERS_PER_UNIT,
        images_per_task=IMAGES_PER_UNIT,
        created_by=user,
    )
    services.batch_publish(batch=batch)
    truths = [
        TrueUnit(
            str(unit.pk),
            human_category_of(unit.concept_category, unit.label),
            (dissection_word(unit.label),),
            images=IMAGES_PER_UNIT,
        )
        for unit in units
    ]
    crowd = make_crowd(workers=n_workers, spammers=2, accuracy=0.8)
    answers = simulate_answers(truths, crowd, seed=0, per_unit=ANSWERS_PER_UNIT)
    tasks = {str(task.unit_id): task for task in batch.tasks.all()}
    workers = {
        person.name: services.crowd_worker_get_or_create(provider="local", external_id=person.name)
        for person in crowd
    }
    for answer in answers:
        assignment = services.assignment_accept(task=tasks[answer.unit_key], worker=workers[answer.worker])
        services.annotation_submit(
            assignment=assignment,
            words=answer.words,
            category=answer.category,
            rejected_ranks=answer.rejected,  # positions: a task shows ranks 0, 1, 2
        )
    return batch, user


if __name__ == "__main__":
    main()
