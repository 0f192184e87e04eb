"""Forms of the run pages: parse what a requester types; `runs.services` re-checks every rule."""

from __future__ import annotations

from typing import Any

from django import forms

from runs.models import Network, ProbeSet, Readiness


class NetworkForm(forms.Form):
    name = forms.CharField(max_length=200)
    architecture = forms.CharField(
        max_length=100,
        required=False,
        help_text="toy, or a torchvision name such as resnet18 (not for TorchScript)",
    )
    weights = forms.FileField(required=False, help_text="A state-dict checkpoint (.pt/.pth)")
    torchscript = forms.FileField(
        required=False, label="TorchScript file", help_text="Instead of architecture + weights"
    )


class ProbeSetForm(forms.Form):
    name = forms.CharField(max_length=200)
    path = forms.CharField(
        max_length=1000, help_text="A Broden-format folder the workers can read, or s3://bucket/prefix"
    )


class RunForm(forms.Form):
    name = forms.CharField(max_length=200)
    network = forms.ModelChoiceField(queryset=Network.objects.filter(status=Readiness.READY).order_by("name"))
    probe_set = forms.ModelChoiceField(
        queryset=ProbeSet.objects.filter(status=Readiness.READY).order_by("name"), label="Probe set"
    )
    layers = forms.CharField(max_length=1000, help_text="Comma-separated layer names, e.g. conv3, conv4")
    shard_size = forms.IntegerField(
        min_value=1,
        initial=64,
        label="Images per shard",
        help_text="Shards spread over every worker listening on the gpu queue",
    )
    topk = forms.IntegerField(min_value=1, max_value=100, initial=20, label="Top images per unit")
    semantics = forms.ChoiceField(
        choices=[("paper", "paper"), ("netdissect-lite", "netdissect-lite")], initial="paper"
    )

    def launch_kwargs(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["layers"] = [layer for layer in data["layers"].split(",") if layer.strip()]
        return data
