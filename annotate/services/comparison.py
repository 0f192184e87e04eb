"""The comparison's stored figures: computed once per change of their inputs, in a worker task.

Every service that changes what a comparison reads (a new, confirmed, approved or rejected answer, the
batch's minimum of answers) calls `comparison_inputs_changed`; after its transaction commits, each stored
summary that covers the units is queued for `annotate.tasks.comparison_refresh` once, however many answers
arrive while it waits. The task (`comparison_summary_recompute`) computes only when the fingerprint moved.
Pages, downloads and the API serve `comparison_figures`: the stored figures, recomputed in the request only
when there are none yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from agreement import plots
from annotate.errors import InvalidAnswer
from annotate.models import Batch, ComparisonSummary
from annotate.selectors import comparison as selectors
from runs.models import DissectionRun

log = logging.getLogger(__name__)

REFRESH_TASK = "annotate.tasks.comparison_refresh"
REQUEUE_AFTER = timedelta(minutes=5)
"""A recomputation queued this long ago and not started is taken to be lost (a broker or worker restarted)
and queued again by the next change or page view."""


def comparison_refresh(
    *,
    batch: Batch | None = None,
    run: DissectionRun | None = None,
    aggregation: selectors.Aggregation,
) -> ComparisonSummary:
    """Compute the comparison of `batch` (or `run`) now and store it with the fingerprint of its inputs.

    The fingerprint is taken before the inputs are read, so an answer that lands in between makes the
    stored figures look stale (and be redone), never fresh.
    """
    fingerprint = selectors.comparison_fingerprint(batch=batch, run=run, aggregation=aggregation)
    started = time.perf_counter()
    data = (
        selectors.batch_comparison_input(batch=batch)
        if batch is not None
        else selectors.run_comparison_input(run=run)  # type: ignore[arg-type]
    )
    summary = selectors.comparison_summarize(data=data, aggregation=aggregation)
    figures = plots.summary_plots(summary)
    values = {
        "fingerprint": fingerprint,
        "summary": summary,
        "plots": figures,
        "computed_at": timezone.now(),
        "compute_seconds": time.perf_counter() - started,
    }
    try:
        with transaction.atomic():
            stored, _ = ComparisonSummary.objects.update_or_create(
                batch=batch, run=run, aggregation=aggregation, defaults=values
            )
    except IntegrityError:  # a concurrent first view stored it first: store ours over it
        stored = ComparisonSummary.objects.get(batch=batch, run=run, aggregation=aggregation)
        for name, value in values.items():
            setattr(stored, name, value)
        stored.save()
    return stored


def comparison_summary_recompute(*, summary_id: int) -> bool:
    """The worker task's body: redo one stored summary if its inputs changed; True when it was redone.

    `queued_at` is cleared before computing, so a change that lands meanwhile queues the next round.
    """
    ComparisonSummary.objects.filter(pk=summary_id).update(queued_at=None)
    stored = ComparisonSummary.objects.select_related("batch", "run").filter(pk=summary_id).first()
    if stored is None:
        return False
    aggregation: selectors.Aggregation = "majority" if stored.aggregation == "majority" else "dawid_skene"
    current = selectors.comparison_fingerprint(batch=stored.batch, run=stored.run, aggregation=aggregation)
    if current == stored.fingerprint:
        return False
    comparison_refresh(batch=stored.batch, run=stored.run, aggregation=aggregation)
    return True


def comparison_figures(
    *,
    batch: Batch | None = None,
    run: DissectionRun | None = None,
    aggregation: selectors.Aggregation,
) -> tuple[ComparisonSummary, bool]:
    """What a page or a download serves: the stored figures and whether they are stale (a recomputation is
    then queued, and the stale figures are served meanwhile). Computed here, once, only when none are
    stored yet."""
    stored = selectors.comparison_cached(batch=batch, run=run, aggregation=aggregation)
    if stored is None:
        return comparison_refresh(batch=batch, run=run, aggregation=aggregation), False
    if selectors.comparison_fingerprint(batch=batch, run=run, aggregation=aggregation) == stored.fingerprint:
        return stored, False
    comparison_queue(summaries=[stored])
    return stored, True


def _send(summary_id: int) -> bool:
    """Queue the refresh task by name (this module never imports the tasks); False when the broker is down."""
    from kombu.exceptions import OperationalError as BrokerError

    from workers.app import app

    try:
        app.send_task(REFRESH_TASK, args=(summary_id,))
    except BrokerError:
        log.warning("broker unreachable: comparison summary %s stays stale until the next change", summary_id)
        return False
    return True


def comparison_queue(*, summaries: Iterable[ComparisonSummary]) -> int:
    """Queue a recomputation of each summary not already waiting for one; the number queued."""
    now = timezone.now()
    ids = [stored.pk for stored in summaries]
    waiting = Q(queued_at__isnull=False) & Q(queued_at__gt=now - REQUEUE_AFTER)
    due = list(ComparisonSummary.objects.filter(pk__in=ids).exclude(waiting).values_list("pk", flat=True))
    ComparisonSummary.objects.filter(pk__in=due).update(queued_at=now)
    sent = [summary_id for summary_id in due if _send(summary_id)]
    ComparisonSummary.objects.filter(pk__in=set(due) - set(sent)).update(queued_at=None)
    return len(sent)


def comparison_inputs_changed(*, unit_ids: Iterable[int] = (), batch: Batch | None = None) -> None:
    """Queue, once the current transaction commits, every stored summary that reads these units (the
    batches that hold them and their runs) or `batch`'s settings. Nothing is stored yet for a comparison
    nobody has opened, so nothing is queued for it."""
    units = list(unit_ids)

    def queue() -> None:
        covering = Q(batch__tasks__unit__in=units) | Q(run__units__in=units) if units else Q(pk__in=[])
        if batch is not None:
            covering |= Q(batch=batch)
        comparison_queue(summaries=ComparisonSummary.objects.filter(covering).distinct())

    transaction.on_commit(queue)


def batch_min_answers_set(*, batch: Batch, min_answers: int) -> Batch:
    """Change the answers a unit needs to enter the batch's comparison; its figures are redone."""
    if not 1 <= min_answers <= 100:
        raise InvalidAnswer(f"Minimum answers per unit: must be between 1 and 100, got {min_answers}.")
    with transaction.atomic():
        batch.min_answers = min_answers
        batch.save(update_fields=["min_answers", "updated_at"])
        comparison_inputs_changed(batch=batch)
    return batch
