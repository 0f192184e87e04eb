"""Requester pages for dissection runs: register networks and probe sets, launch, watch, cancel, CAM gallery.

Thin: forms check input, `annotate.services.runs` writes, `annotate.selectors.runs` reads.
"""
from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from annotate.models import DissectionRun, Network, ProbeSet
from annotate.selectors import runs as run_selectors
from annotate.services import runs as run_services
from annotate.services.runs import RunError
from annotate.views import staff_required

POLL_SECONDS = 2


class NetworkForm(forms.Form):
    name = forms.CharField(max_length=200)
    architecture = forms.CharField(max_length=100, required=False,
                                   help_text="toy, or a torchvision name such as resnet18 (not for TorchScript)")
    weights = forms.FileField(required=False, help_text="A state-dict checkpoint (.pt/.pth)")
    torchscript = forms.FileField(required=False, label="TorchScript file",
                                  help_text="Instead of architecture + weights")


class ProbeSetForm(forms.Form):
    name = forms.CharField(max_length=200)
    path = forms.CharField(max_length=1000, help_text="A Broden-format folder the workers can read, "
                                                       "or s3://bucket/prefix")


class RunForm(forms.Form):
    name = forms.CharField(max_length=200)
    network = forms.ModelChoiceField(queryset=Network.objects.order_by("name"))
    probe_set = forms.ModelChoiceField(queryset=ProbeSet.objects.order_by("name"), label="Probe set")
    layers = forms.CharField(max_length=1000, help_text="Comma-separated layer names, e.g. conv3, conv4")
    shard_size = forms.IntegerField(min_value=1, initial=64, label="Images per shard",
                                    help_text="Shards spread over every worker listening on the gpu queue")
    topk = forms.IntegerField(min_value=1, max_value=100, initial=20, label="Top images per unit")
    semantics = forms.ChoiceField(choices=[("paper", "paper"), ("netdissect-lite", "netdissect-lite")],
                                  initial="paper")

    def launch_kwargs(self) -> dict[str, object]:
        data = dict(self.cleaned_data)
        data["layers"] = [layer for layer in data["layers"].split(",") if layer.strip()]
        return data


@staff_required
@require_safe
def run_list(request: HttpRequest) -> HttpResponse:
    from annotate import selectors

    return render(request, "annotate/runs/list.html", {
        "runs": selectors.runs_overview(), "networks": run_selectors.networks_overview(),
        "probe_sets": run_selectors.probe_sets_overview()})


@staff_required
@require_http_methods(["GET", "POST"])
def run_create(request: HttpRequest) -> HttpResponse:
    form = RunForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                run = run_services.run_launch(**form.launch_kwargs(), created_by=request.user)
            except RunError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Run {run.name!r} queued in {run.shards.count()} scan shards.")
                return redirect("annotate:run_detail", run_id=run.pk)
        return render(request, "annotate/runs/new.html", {"form": form}, status=400)
    return render(request, "annotate/runs/new.html", {"form": form})


@staff_required
@require_safe
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(DissectionRun.objects.select_related("network", "probe_set"), pk=run_id)
    return render(request, "annotate/runs/detail.html", {
        "run": run, "status": run_selectors.run_status(run=run), "reports": run_selectors.run_reports(run=run),
        "units": run_selectors.run_units(run=run) if run.status == DissectionRun.Status.DONE else [],
        "gallery": run_selectors.run_cam_gallery(run=run), "poll_seconds": POLL_SECONDS})


@staff_required
@require_safe
def run_status(request: HttpRequest, run_id: int) -> JsonResponse:
    run = get_object_or_404(DissectionRun, pk=run_id)
    return JsonResponse(run_selectors.run_status(run=run))


def _run_action(request: HttpRequest, run_id: int, action: Callable[..., object], done: str) -> HttpResponse:
    """Apply a run service, report its outcome as a message, and go back to the run page."""
    run = get_object_or_404(DissectionRun, pk=run_id)
    try:
        action(run=run)
    except RunError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("annotate:run_detail", run_id=run.pk)


@staff_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    return _run_action(request, run_id, run_services.run_cancel, "Run cancelled; its remaining shards are dropped.")


@staff_required
@require_POST
def run_cam(request: HttpRequest, run_id: int) -> HttpResponse:
    return _run_action(request, run_id, run_services.cam_gallery_request,
                       "CAM gallery queued; reload this page in a moment.")


@staff_required
@require_http_methods(["GET", "POST"])
def network_create(request: HttpRequest) -> HttpResponse:
    form = NetworkForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                network = run_services.network_register(**form.cleaned_data)
            except RunError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Network {network.name!r} registered.")
                return redirect("annotate:run_list")
        return render(request, "annotate/runs/register.html", {"form": form, "what": "network",
                                                               "multipart": True}, status=400)
    return render(request, "annotate/runs/register.html", {"form": form, "what": "network", "multipart": True})


@staff_required
@require_http_methods(["GET", "POST"])
def probe_set_create(request: HttpRequest) -> HttpResponse:
    form = ProbeSetForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                probe_set = run_services.probe_set_register(**form.cleaned_data)
            except RunError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Probe set {probe_set.name!r} registered "
                                          f"({probe_set.image_count} images).")
                return redirect("annotate:run_list")
        return render(request, "annotate/runs/register.html", {"form": form, "what": "probe set"}, status=400)
    return render(request, "annotate/runs/register.html", {"form": form, "what": "probe set"})
