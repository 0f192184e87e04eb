"""Staff pages of the human-versus-automatic comparison: the dashboard of a batch or a run, its tables as
CSV and JSON, the batch's minimum of answers, and the button that makes a blind verification batch.

Thin: the figures (summary and plots) come from the stored `ComparisonSummary`, computed by a worker task
after each change of their inputs; a page that finds them stale shows them with a note and queues the
recomputation, and only a comparison never computed is computed in the request. Batches and runs are
looked up among those the user may see (`runs.access`): another project's is a 404."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import http_date
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST, require_safe

from agreement.categories import LABELS
from agreement.glossary import DEFINITIONS
from agreement.records import ALL_LAYERS
from agreement.twoafc import condition_plot_svg
from annotate.errors import AnnotateError, DuplicateVerification
from annotate.forms import MinAnswersForm
from annotate.models import Batch, ComparisonSummary, Task
from annotate.selectors import comparison as selectors
from annotate.selectors import twoafc as twoafc_selectors
from annotate.services import comparison as comparison_services
from annotate.services import verification as services
from runs.access import staff_required
from runs.models import DissectionRun
from runs.templatetags.runs_tags import concept_display

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
TABLE_ROWS = 50
"""Rows of a table per page of the dashboard (the downloads hold every row)."""
APART_SHOWN = 40
"""Units counted apart named at the top of the page (the units table lists them all)."""
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
STATISTIC_COLUMNS = {
    "fleiss_kappa": "Fleiss' κ",
    "krippendorff_alpha": "Krippendorff's α",
    "word_agreement": "Word agreement",
    "category_agreement": "Same category",
    "cohen_kappa": "Cohen's κ",
    "concept_match_rate": "Same concept",
    "mean_precision": "Image precision",
    "concept_match_rate_interpretable": "Same concept, interpretable units",
    "concept_match_rate_uninterpretable": "Same concept, uninterpretable units",
    "spearman_iou_precision": "ρ(IoU, image precision)",
    "spearman_iou_agreement": "ρ(IoU, word agreement)",
}
COLUMNS = {
    **STATISTIC_COLUMNS,
    **LABELS,
    "unit_key": "Unit",
    "layer": "Layer",
    "answers": "Answers",
    "counted": "In the statistics",
    "consensus_word": "Consensus word",
    "majority_category": "Majority category",
    "majority_share": "Majority's share",
    "ds_category": "Dawid–Skene category",
    "ds_posterior": "Dawid–Skene probability",
    "human_category": "Human category",
    "human_confidence": "Human confidence",
    "auto_label": "Dissection label",
    "auto_category": "Dissection category (probe set)",
    "auto_human_category": "Dissection category",
    "iou": "IoU",
    "interpretable": "Interpretable",
    "category_match": "Same category",
    "concept_match": "Same concept",
    "units": "Units",
    "units_counted": "Units counted",
    "units_apart": "Units apart (too few answers)",
    "units_unanswered": "Units without answers",
    "answers_counted": "Answers counted",
    "human": "Human category",
    "source": "Labels from",
    "disagreement": "Differs in",
    "confidence": "Confidence × IoU",
    "worker": "Worker",
    "majority_agreement": "Agrees with the majority",
    "ds_accuracy": "Dawid–Skene accuracy",
    "correct": "Judged correct",
    "share": "Share correct",
    "ci_low": "Interval low",
    "ci_high": "Interval high",
}
"""Table headers on the page; the downloads keep the machine names."""
SUFFIXES = {
    "_ci_low": "interval low",
    "_ci_high": "interval high",
    "_units": "units",
    "_answers": "answers",
    "_rho": "",
    "_p": "p-value",
}
SUMMARY = "summary"
TWOAFC_TABLE_TITLES = {
    "twoafc_conditions": "2AFC: proportion correct per layer and condition",
    "twoafc_differences": "2AFC: differences between conditions (first minus second)",
    "twoafc_units": "2AFC: could people predict each unit?",
}
"""A 2AFC batch's tables, in the order its section shows them (`twoafc_selectors.RESULT_TABLES`)."""


def _twoafc(request: HttpRequest, batch: Batch | None) -> dict[str, Any] | None:
    """A 2AFC batch's results for its section of the dashboard (None for any other batch or a run)."""
    if batch is None or batch.task_type != Batch.TaskType.TWOAFC:
        return None
    results = twoafc_selectors.twoafc_results(batch=batch)
    tables = results["tables"]
    return {
        **results,
        "plot": mark_safe(condition_plot_svg(tables["twoafc_conditions"])),  # built from escaped parts
        "display": [
            {"name": name, "title": title, **_display(request, name, tables[name])}
            for name, title in TWOAFC_TABLE_TITLES.items()
        ],
    }


def column_title(column: str) -> str:
    """A column's header on the page: its title, or its statistic's title and what the suffix adds."""
    if column in COLUMNS:
        return COLUMNS[column]
    for suffix, words in SUFFIXES.items():
        base = column.removesuffix(suffix)
        if base != column and base in STATISTIC_COLUMNS:
            return f"{STATISTIC_COLUMNS[base]}: {words}" if words else STATISTIC_COLUMNS[base]
    return column.replace("_", " ").capitalize()


def _aggregation(request: HttpRequest) -> selectors.Aggregation:
    value = request.GET.get("aggregation", "dawid_skene")
    if value not in AGGREGATIONS:
        raise Http404(f"Unknown aggregation {value!r}.")
    return value


def _figures(
    request: HttpRequest, *, batch: Batch | None = None, run: DissectionRun | None = None
) -> tuple[ComparisonSummary, bool]:
    return comparison_services.comparison_figures(batch=batch, run=run, aggregation=_aggregation(request))


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _td(text: str, link: str | None) -> str:
    return f'<td><a href="{escape(link)}">{escape(text)}</a></td>' if link else f"<td>{escape(text)}</td>"


def _page_cell(row: Mapping[str, Any], key: str) -> str:
    """A cell as the page shows it: the dissection label without Broden's suffix ("white-c" -> "white");
    the downloads keep the stored label."""
    value = row.get(key)
    return concept_display(value) if key == "auto_label" and value else _cell(value)


def _display(request: HttpRequest, name: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One page of a table for the template: headers, the rows as escaped HTML (the unit links to its unit
    page), and the page's links. The cells are joined here: thousands of them through the template
    language's loops were most of the page's time."""
    columns = [key for key in (rows[0] if rows else ()) if key != "url"]  # every row has the same keys
    page = Paginator(rows, TABLE_ROWS).get_page(request.GET.get(f"{name}-page"))
    body = mark_safe(  # every cell is escaped by _td
        "".join(
            "<tr>"
            + "".join(
                _td(_page_cell(row, key), row.get("url") if key == "unit_key" else None) for key in columns
            )
            + "</tr>"
            for row in page.object_list
        )
    )
    query = request.GET.copy()
    links = {}
    for label, number in (
        ("previous", page.previous_page_number() if page.has_previous() else None),
        ("next", page.next_page_number() if page.has_next() else None),
    ):
        if number is not None:
            query[f"{name}-page"] = str(number)
            links[label] = f"?{query.urlencode()}#table-{name}"
    return {
        "columns": [(column_title(key), key) for key in columns],
        "rows": body,
        "page": page,
        "links": links,
        "total": len(rows),
    }


def _headline(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "label": label,
            "value": summary.get(name),
            "ci": summary["ci"].get(name),
            "reason": summary["reasons"].get(name),
            "ci_reason": summary["reasons"].get(f"{name}_ci"),
            "caveat": summary["caveats"].get(name),
            "support": summary["support"][name],
            "definition": DEFINITIONS[name],
        }
        for name, label in HEADLINE.items()
    ]


def _dashboard(
    request: HttpRequest,
    *,
    subject: str,
    export_url: str,
    batch: Batch | None = None,
    run: DissectionRun | None = None,
) -> HttpResponse:
    stored, stale = _figures(request, batch=batch, run=run)
    summary = stored.summary
    tables = summary["tables"]
    apart = [row for row in tables["units"] if not row["counted"] and row["answers"]]
    return render(
        request,
        "annotate/comparison/dashboard.html",
        {
            "subject": subject,
            "batch": batch,
            "run": run,
            "summary": summary,
            "computed_at": stored.computed_at,
            "compute_seconds": stored.compute_seconds,
            "stale": stale,
            "plots": stored.plots,
            "headline": _headline(summary),
            "aggregation": stored.aggregation,
            "aggregations": AGGREGATIONS,
            "aggregation_definition": DEFINITIONS[stored.aggregation],
            "definitions": DEFINITIONS,
            "min_answers": summary["settings"]["min_answers"],
            "min_answers_form": MinAnswersForm(initial={"min_answers": batch.min_answers}) if batch else None,
            "apart": apart[:APART_SHOWN],
            "apart_more": max(0, len(apart) - APART_SHOWN),
            "export_url": export_url,
            "all_layers": ALL_LAYERS,
            "can_verify": batch is not None and batch.tasks.filter(kind=Task.Kind.LABEL).exists(),
            "twoafc": _twoafc(request, batch),
            "tables": [
                {"name": name, "title": title, **_display(request, name, tables[name])}
                for name, title in TABLE_TITLES.items()
                if name in tables
            ],
        },
    )


def _export(
    request: HttpRequest,
    *,
    stem: str,
    table: str,
    fmt: str,
    batch: Batch | None = None,
    run: DissectionRun | None = None,
) -> HttpResponse:
    """A table (or the whole summary) from the stored figures; Last-Modified says when they were computed,
    X-Comparison-Stale whether newer answers are being counted (as the API says)."""
    if fmt not in ("csv", "json") or (table == SUMMARY and fmt != "json"):
        raise Http404("Unknown export format.")
    twoafc = batch is not None and batch.task_type == Batch.TaskType.TWOAFC
    if table != SUMMARY and table not in TABLE_TITLES and not (twoafc and table in TWOAFC_TABLE_TITLES):
        raise Http404("Unknown table.")
    stored, stale = _figures(request, batch=batch, run=run)
    summary = stored.summary
    if twoafc:
        assert batch is not None
        results = twoafc_selectors.twoafc_results(batch=batch)
        summary = {**summary, "twoafc": results, "tables": {**summary["tables"], **results["tables"]}}
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
    response["Last-Modified"] = http_date(stored.computed_at.timestamp())
    response["X-Comparison-Stale"] = "true" if stale else "false"
    return response


@staff_required
@require_safe
def batch_comparison(request: HttpRequest, batch_id: str) -> HttpResponse:
    batch = get_object_or_404(Batch.objects.visible_to(request.user), public_id=batch_id)
    return _dashboard(
        request,
        subject=batch.title,
        batch=batch,
        export_url=reverse("annotate:batch_comparison", args=[batch.public_id]),
    )


@staff_required
@require_safe
def batch_comparison_export(request: HttpRequest, batch_id: str, table: str, fmt: str) -> HttpResponse:
    batch = get_object_or_404(Batch.objects.visible_to(request.user), public_id=batch_id)
    return _export(request, batch=batch, stem=f"batch-{batch.public_id}", table=table, fmt=fmt)


@staff_required
@require_POST
def batch_comparison_settings(request: HttpRequest, batch_id: str) -> HttpResponse:
    """Change the batch's minimum of answers per unit; the figures are recomputed by the worker."""
    batch = get_object_or_404(Batch.objects.visible_to(request.user), public_id=batch_id)
    form = MinAnswersForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(error) for error in form.errors.get("min_answers", [])))
    else:
        comparison_services.batch_min_answers_set(batch=batch, min_answers=form.cleaned_data["min_answers"])
        messages.success(
            request,
            f"Units now need {batch.min_answers} answer{'' if batch.min_answers == 1 else 's'} to count; "
            "the figures are being recomputed.",
        )
    return redirect("annotate:batch_comparison", batch_id=batch.public_id)


@staff_required
@require_safe
def run_comparison(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(DissectionRun.objects.visible_to(request.user), pk=run_id)
    return _dashboard(
        request,
        subject=f"Run {run.name}",
        run=run,
        export_url=reverse("annotate:run_comparison", args=[run.pk]),
    )


@staff_required
@require_safe
def run_comparison_export(request: HttpRequest, run_id: int, table: str, fmt: str) -> HttpResponse:
    run = get_object_or_404(DissectionRun.objects.visible_to(request.user), pk=run_id)
    return _export(request, run=run, stem=f"run-{run.pk}", table=table, fmt=fmt)


@staff_required
@require_POST
def batch_verification_create(request: HttpRequest, batch_id: str) -> HttpResponse:
    """Make a draft blind verification batch from the batch's consensus and dissection labels."""
    batch = get_object_or_404(Batch.objects.visible_to(request.user), public_id=batch_id)
    try:
        verification = services.verification_batch_create(batch=batch, created_by=request.user)
    except DuplicateVerification as exc:
        messages.warning(request, f"Nothing was created: {exc}")
        return redirect("annotate:batch_detail", batch_id=exc.existing.public_id)
    except AnnotateError as exc:
        messages.error(request, str(exc))
        return redirect("annotate:batch_comparison", batch_id=batch.public_id)
    tasks = verification.tasks.count()
    units = verification.tasks.values("unit").distinct().count()
    messages.success(
        request,
        f"Draft verification batch created: {units} units, {tasks} tasks (two per unit). "
        "Publish it to start.",
    )
    return redirect("annotate:batch_detail", batch_id=verification.public_id)
