"""Requester pages for dissection runs: register networks and probe sets, launch, watch, cancel, CAM gallery,
and the media files of runs and networks.

Thin: forms check input, `runs.services` writes, `runs.selectors` reads. Every object is looked up among
those the user may see (`runs.access`): another project's is a 404.
"""

from __future__ import annotations

import mimetypes
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from django.contrib import messages
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
    require_safe,
)

from dissection.compare import CompareError, check_comparable, compare
from dissection.compare_report import compare_body
from dissection.compare_tables import TABLES, compare_table, table_csv
from runs import selectors as run_selectors
from runs import services as run_services
from runs.access import staff_required
from runs.errors import RunError
from runs.featviz import featviz_launch, featviz_layers, featviz_units
from runs.forms import FeatvizForm, NetworkForm, ProbeSetForm, RunForm, RunSeriesForm, UnitFilterForm
from runs.models import DissectionRun, Network

POLL_SECONDS = 2
ACTIVE_JOB = ("queued", "running")
# Stored HTML (report.html: inline CSS and SVG, images beside it) and SVG may show images and styles from
# here and nothing else: no script, no form, no frame, no plugin.
MEDIA_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
MEDIA_INLINE = ("image/", "text/html")


@staff_required
@require_safe
def run_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "runs/list.html",
        {
            "runs": run_selectors.runs_overview(user=request.user),
            "networks": run_selectors.networks_overview(user=request.user),
            "probe_sets": run_selectors.probe_sets_overview(user=request.user),
            "compare_with": int(request.GET["compare"]) if request.GET.get("compare", "").isdigit() else None,
        },
    )


@staff_required
@require_http_methods(["GET", "POST"])
def run_create(request: HttpRequest) -> HttpResponse:
    form = RunForm(request.POST or None, user=request.user)
    if request.method == "POST":
        if form.is_valid():
            try:
                run = run_services.run_launch(**form.launch_kwargs(), created_by=request.user)
            except RunError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(
                    request, f"Run {run.name!r} queued: {run_selectors.run_plan_display(run=run)}."
                )
                if run_selectors.run_waits_for_broker(run=run):
                    messages.warning(
                        request,
                        "The task broker is unreachable right now: the run waits and is handed to the "
                        "workers as soon as it is back (the sweep does this every minute).",
                    )
                return redirect("runs:run_detail", run_id=run.pk)
        return render(request, "runs/new.html", {"form": form}, status=400)
    return render(request, "runs/new.html", {"form": form})


@staff_required
@require_http_methods(["GET", "POST"])
def run_series_create(request: HttpRequest) -> HttpResponse:
    """Dissect several networks (the checkpoints of a training series) alike, then compare them."""
    form = RunSeriesForm(request.POST or None, user=request.user)
    context = {"form": form, "series": True}
    if request.method == "POST":
        if form.is_valid():
            try:
                series = run_services.run_series_launch(**form.launch_kwargs(), created_by=request.user)
            except RunError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"{len(series)} runs queued: {', '.join(r.name for r in series)}.")
                return redirect(run_selectors.runs_compare_url(runs=series))
        return render(request, "runs/new.html", context, status=400)
    return render(request, "runs/new.html", context)


@staff_required
@require_safe
def run_unit(request: HttpRequest, run_id: int, layer: str, number: int) -> HttpResponse:
    """A unit named as the run's reports name it (layer, number = channel + 1): on to its unit page."""
    unit = run_selectors.unit_by_number(user=request.user, run_id=run_id, layer=layer, number=number)
    if unit is None:
        raise Http404(f"Layer {layer!r} of this run has no unit {number}.")
    return redirect("annotate:unit_detail", unit.pk)


@staff_required
@require_safe
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run: its progress while it works; once done, a tab per layer with the layer's summary chart and
    its units filtered, sorted and paginated
    (`?layer=&label=&category=&min_iou=&interpretable=&sort=&page=`)."""
    run = get_object_or_404(
        DissectionRun.objects.visible_to(request.user).select_related("network", "probe_set", "project"),
        pk=run_id,
    )
    context: dict[str, Any] = {
        "run": run,
        "status": run_selectors.run_status(run=run),
        "reports": run_selectors.run_reports(run=run),
        "gallery": run_selectors.run_cam_gallery(run=run),
        "poll_seconds": POLL_SECONDS,
    }
    layers = run_selectors.run_layers(run=run) if run.status == DissectionRun.Status.DONE else []
    if layers:
        layer = request.GET.get("layer") or layers[0]
        if layer not in layers:
            raise Http404("This run has no such layer.")
        form = UnitFilterForm(
            request.GET or None, categories=run_selectors.run_categories(run=run, layer=layer)
        )
        units = run_selectors.run_units(
            run=run, layer=layer, filters=form.unit_filter(), thumbnails=run_selectors.THUMBNAILS_PER_UNIT
        )
        page = Paginator(units, run_selectors.UNITS_PER_PAGE).get_page(request.GET.get("page"))
        listed = list(page.object_list)
        shown = featviz_units(run_id=run.pk, layer=layer, channels=[unit.channel for unit in listed])
        query = request.GET.copy()
        query.pop("page", None)
        context.update(
            layers=layers,
            layer=layer,
            summary=run_selectors.run_layer_summary(run=run, layer=layer),
            form=form,
            page=page,
            page_query=query.urlencode(),
            featviz_shown=bool(shown),
            page_units=[(unit, shown.get(unit.channel)) for unit in listed],
        )
        if run.network is not None and run.network.kind == Network.Kind.CLASSIFIER:
            featviz = featviz_layers(run=run, layers=layers)
            context.update(
                featviz_form=FeatvizForm(initial={"layer": layer}, layers=layers),
                featviz=featviz,
                featviz_running=any(item.job and item.job.status in ACTIVE_JOB for item in featviz),
            )
    return render(request, "runs/detail.html", context)


@staff_required
@require_safe
def run_status(request: HttpRequest, run_id: int) -> JsonResponse:
    run = get_object_or_404(DissectionRun.objects.visible_to(request.user), pk=run_id)
    return JsonResponse(run_selectors.run_status(run=run))


def _run_action(request: HttpRequest, run_id: int, action: Callable[..., object], done: str) -> HttpResponse:
    """Apply a run service, report its outcome as a message, and go back to the run page."""
    run = get_object_or_404(DissectionRun.objects.visible_to(request.user), pk=run_id)
    try:
        action(run=run)
    except RunError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("runs:run_detail", run_id=run.pk)


@staff_required
@require_http_methods(["GET", "POST"])
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    """GET asks for confirmation and says what cancelling does; only a POST that carries the confirmation
    cancels. A POST without it changes nothing and asks again."""
    run = get_object_or_404(DissectionRun.objects.visible_to(request.user), pk=run_id)
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        return _run_action(
            request,
            run_id,
            partial(run_services.run_cancel, actor=request.user),
            "Run cancelled; its remaining shards are dropped.",
        )
    if run.status not in run_selectors.ACTIVE:
        messages.error(request, f"A {run.get_status_display().lower()} run cannot be cancelled.")
        return redirect("runs:run_detail", run_id=run.pk)
    return render(
        request,
        "runs/cancel.html",
        {"run": run, "status": run_selectors.run_status(run=run), "unconfirmed": request.method == "POST"},
        status=400 if request.method == "POST" else 200,
    )


@staff_required
@require_POST
def run_cam(request: HttpRequest, run_id: int) -> HttpResponse:
    return _run_action(
        request, run_id, run_services.cam_gallery_request, "CAM gallery queued; reload this page in a moment."
    )


@staff_required
@require_POST
def run_featviz(request: HttpRequest, run_id: int) -> HttpResponse:
    """Queue feature visualization of one layer's units (a sharded job; the run page shows its progress)."""
    run = get_object_or_404(DissectionRun.objects.visible_to(request.user), pk=run_id)
    form = FeatvizForm(request.POST, layers=run_selectors.run_layers(run=run))
    if not form.is_valid():
        problems = [
            f"{form.fields[name].label or name.capitalize()}: {error}"
            for name, errors in form.errors.items()
            for error in errors
        ]
        messages.error(request, "Feature visualization not queued. " + " ".join(problems))
    else:
        try:
            featviz_launch(run=run, **form.cleaned_data)
        except RunError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Feature visualization of {form.cleaned_data['layer']} queued.")
    layer = urlencode({"layer": form.data.get("layer", "")})
    return redirect(f"{reverse('runs:run_detail', args=[run.pk])}?{layer}#featviz")


@staff_required
@require_http_methods(["GET", "POST"])
def network_create(request: HttpRequest) -> HttpResponse:
    form = NetworkForm(request.POST or None, request.FILES or None, user=request.user)
    if request.method == "POST":
        if form.is_valid():
            try:
                network = run_services.network_register(**form.cleaned_data, created_by=request.user)
            except RunError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Network {network.name!r} registered; a worker is checking it.")
                return redirect("runs:run_list")
        return render(
            request, "runs/register.html", {"form": form, "what": "network", "multipart": True}, status=400
        )
    return render(request, "runs/register.html", {"form": form, "what": "network", "multipart": True})


@staff_required
@require_http_methods(["GET", "POST"])
def probe_set_create(request: HttpRequest) -> HttpResponse:
    form = ProbeSetForm(request.POST or None, user=request.user)
    if request.method == "POST":
        if form.is_valid():
            try:
                probe_set = run_services.probe_set_register(**form.cleaned_data, created_by=request.user)
            except RunError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Probe set {probe_set.name!r} registered; a worker is reading it.")
                return redirect("runs:run_list")
        return render(request, "runs/register.html", {"form": form, "what": "probe set"}, status=400)
    return render(request, "runs/register.html", {"form": form, "what": "probe set"})


@staff_required
@require_safe
def media_file(request: HttpRequest, key: str) -> FileResponse:
    """A stored file (tile, strip, report, result, upload) for the members of its owner's project, streamed
    from the default storage (local disk or S3). There is no other route to local media: a worker's page
    gets its images through the task's image view, and anything that is not a run's or a network's file is
    a 404."""
    if not run_selectors.media_key_visible(user=request.user, key=key) or not default_storage.exists(key):
        raise Http404("No such file.")
    content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    response = FileResponse(
        default_storage.open(key, "rb"),
        content_type=content_type,
        as_attachment=not content_type.startswith(MEDIA_INLINE),
        filename=PurePosixPath(key).name,
    )
    response["Content-Security-Policy"] = MEDIA_CSP
    response["Cache-Control"] = "private, max-age=300"
    return response


# The comparison page embeds its strips and styles: data images and inline CSS only.
COMPARE_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@staff_required
@require_safe
def run_compare(request: HttpRequest) -> HttpResponse:
    """Finished runs side by side (`dissection.compare`): the page, compare.json with ?format=json, or one
    of its tables with ?format=csv&table=NAME. Runs still at work are listed until all are done."""
    ids = [int(value) for value in request.GET.getlist("run") if value.isdigit()]
    visible = DissectionRun.objects.visible_to(request.user).select_related("network__base")
    found = {run.pk: run for run in visible.filter(pk__in=ids)}
    if len(found) != len(set(ids)):
        raise Http404("No such run.")
    runs = [found[pk] for pk in dict.fromkeys(ids)]
    if len(runs) < 2:
        messages.error(request, "Pick at least two finished runs to compare.")
        return redirect("runs:run_list")
    context: dict[str, Any] = {"runs": runs, "query": request.GET.urlencode()}
    if any(run.status != DissectionRun.Status.DONE for run in runs):
        response = render(request, "runs/compare.html", context | {"waiting": True})
        response["Content-Security-Policy"] = COMPARE_CSP
        return response
    table = request.GET.get("table", "")
    if request.GET.get("format") == "csv" and table not in TABLES:
        raise Http404(f"No table {table!r}; tables: {', '.join(TABLES)}.")
    with tempfile.TemporaryDirectory() as workdir:
        loaded = run_selectors.runs_compared(runs=runs, workdir=Path(workdir))
        try:
            check_comparable(loaded, allow_mismatch=request.GET.get("allow_mismatch") == "1")
        except CompareError as exc:
            messages.error(request, str(exc))
            return redirect("runs:run_list")
        document = compare(loaded)
        if request.GET.get("format") == "json":
            response = JsonResponse(document)
            response["Content-Disposition"] = 'attachment; filename="compare.json"'
            return response
        if request.GET.get("format") == "csv":
            response = HttpResponse(table_csv(*compare_table(document, table)), content_type="text/csv")
            response["Content-Disposition"] = f'attachment; filename="compare-{table}.csv"'
            return response
        unit_ids = run_selectors.compare_unit_ids(runs=runs)

        def unit_url(run: str, layer: str, channel: int) -> str:
            unit_id = unit_ids.get((run, layer, channel))
            return reverse("annotate:unit_detail", args=[unit_id]) if unit_id else ""

        report = compare_body(document, loaded, unit_url=unit_url)
    query = request.GET.copy()
    query.pop("format", None)
    query.pop("table", None)
    context |= {"report": report, "tables": TABLES, "query": query.urlencode()}
    response = render(request, "runs/compare.html", context)
    response["Content-Security-Policy"] = COMPARE_CSP
    return response
