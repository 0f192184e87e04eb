"""Staff pages of the human-versus-automatic comparison: the dashboard of a batch or a run, its tables as
CSV and JSON, and the button that makes a blind verification batch. Thin: selectors compute, plots draw.
Batches and runs are looked up among those the user may see (`runs.access`): another project's is a 404."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from agreement import plots
from agreement.records import ALL_LAYERS
from annotate.errors import AnnotateError
from annotate.models import Batch, Task
from annotate.selectors import comparison as selectors
from annotate.services import verification as services
from runs.access import staff_required
from runs.models import DissectionRun

AGGREGATIONS: dict[selectors.Aggregation, str] = {"dawid_skene": "Dawid–Skene", "majority": "Majority vote"}
TABLE_TITLES = {
    "layers": "Agreement per layer",
    "verification": "Blind verification: labels judged correct",
    "category_shares": "Share of each category per layer",
    "confusion": "Confusion matrix (rows human, columns dissection)",
    "disagreements": "Disagreements, most confident first",
    "workers": "Workers",
    "units": "Units",
}
"""The tables in the order the dashboard shows them."""
HEADLINE = {
    "fleiss_kappa": "Fleiss' κ (categories, among workers)",
    "krippendorff_alpha": "Krippendorff's α (categories, among workers)",
    "word_agreement": "Word agreement among workers",
    "category_agreement": "Human = dissection category",
    "cohen_kappa": "Cohen's κ, human versus dissection",
    "concept_match_rate": "Consensus word = dissection label",
    "mean_precision": "Mean image precision",
}
"""The summary statistics shown first, with their names on the page."""
SUMMARY = "summary"


def _aggregation(request: HttpRequest) -> selectors.Aggregation:
    value = request.GET.get("aggregation", "dawid_skene")
    if value not in AGGREGATIONS:
        raise Http404(f"Unknown aggregation {value!r}.")
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _display(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A table for the template: column names, and per row (text, link) cells (the url column links)."""
    columns = [key for key in dict.fromkeys(key for row in rows for key in row) if key != "url"]
    body = [
        [(_cell(row.get(key)), row.get("url") if key == "unit_key" else None) for key in columns]
        for row in rows
    ]
    return {"columns": columns, "rows": body}


def _headline(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "label": label,
            "value": summary.get(name),
            "ci": summary["ci"].get(name),
            "reason": summary["reasons"].get(name),
        }
        for name, label in HEADLINE.items()
    ]


def _dashboard(
    request: HttpRequest,
    *,
    subject: str,
    data: selectors.ComparisonInput,
    export_url: str,
    batch: Batch | None = None,
    run: DissectionRun | None = None,
) -> HttpResponse:
    aggregation = _aggregation(request)
    summary = selectors.comparison_summarize(data=data, aggregation=aggregation)
    tables = summary["tables"]
    return render(
        request,
        "annotate/comparison/dashboard.html",
        {
            "subject": subject,
            "batch": batch,
            "run": run,
            "summary": summary,
            "plots": plots.summary_plots(summary),
            "headline": _headline(summary),
            "aggregation": aggregation,
            "aggregations": AGGREGATIONS,
            "export_url": export_url,
            "all_layers": ALL_LAYERS,
            "can_verify": batch is not None and batch.tasks.filter(kind=Task.Kind.LABEL).exists(),
            "tables": [
                {"name": name, "title": title, **_display(tables[name])}
                for name, title in TABLE_TITLES.items()
                if name in tables
            ],
        },
    )


def _export(
    request: HttpRequest, *, data: selectors.ComparisonInput, stem: str, table: str, fmt: str
) -> HttpResponse:
    if fmt not in ("csv", "json") or (table == SUMMARY and fmt != "json"):
        raise Http404("Unknown export format.")
    if table != SUMMARY and table not in TABLE_TITLES:
        raise Http404("Unknown table.")
    summary = selectors.comparison_summarize(data=data, aggregation=_aggregation(request))
    if table == SUMMARY:
        body, content_type = json.dumps(summary, indent=2) + "\n", "application/json"
    else:
        rows = summary["tables"].get(table)
        if rows is None:
            raise Http404("This comparison has no such table (no verification answers yet).")
        if fmt == "json":
            body, content_type = json.dumps(rows, indent=2) + "\n", "application/json"
        else:
            body, content_type = selectors.table_csv(rows), "text/csv; charset=utf-8"
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{stem}-{table}.{fmt}"'
    return response


@staff_required
@require_safe
def batch_comparison(request: HttpRequest, batch_id: str) -> HttpResponse:
    batch = get_object_or_404(Batch.objects.visible_to(request.user), public_id=batch_id)
    return _dashboard(
        request,
        subject=batch.title,
        batch=batch,
        data=selectors.batch_comparison_input(batch=batch),
        export_url=reverse("annotate:batch_comparison", args=[batch.public_id]),
    )


@staff_required
@require_safe
def batch_comparison_export(request: HttpRequest, batch_id: str, table: str, fmt: str) -> HttpResponse:
    batch = get_object_or_404(Batch.objects.visible_to(request.user), public_id=batch_id)
    return _export(
        request,
        data=selectors.batch_comparison_input(batch=batch),
        stem=f"batch-{batch.public_id}",
        table=table,
        fmt=fmt,
    )


@staff_required
@require_safe
def run_comparison(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(DissectionRun.objects.visible_to(request.user), pk=run_id)
    return _dashboard(
        request,
        subject=f"Run {run.name}",
        run=run,
        data=selectors.run_comparison_input(run=run),
        export_url=reverse("annotate:run_comparison", args=[run.pk]),
    )


@staff_required
@require_safe
def run_comparison_export(request: HttpRequest, run_id: int, table: str, fmt: str) -> HttpResponse:
    run = get_object_or_404(DissectionRun.objects.visible_to(request.user), pk=run_id)
    return _export(
        request, data=selectors.run_comparison_input(run=run), stem=f"run-{run.pk}", table=table, fmt=fmt
    )


@staff_required
@require_POST
def batch_verification_create(request: HttpRequest, batch_id: str) -> HttpResponse:
    """Make a draft blind verification batch from the batch's consensus and dissection labels."""
    batch = get_object_or_404(Batch.objects.visible_to(request.user), public_id=batch_id)
    try:
        verification = services.verification_batch_create(batch=batch, created_by=request.user)
    except AnnotateError as exc:
        messages.error(request, str(exc))
        return redirect("annotate:batch_comparison", batch_id=batch.public_id)
    messages.success(
        request,
        f"Draft verification batch created with {verification.tasks.count()} tasks "
        "(two per unit). Publish it to start.",
    )
    return redirect("annotate:batch_detail", batch_id=verification.public_id)
