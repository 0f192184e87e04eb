"""Forms of the run pages: parse what a requester types; `runs.services` re-checks every rule.

Every choice list holds only what the requester may see (`runs.access`): their projects, and the networks
and probe sets of those projects."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from runs.access import projects_of
from runs.models import Network, ProbeSet, Project, Readiness


def _project_choices(form: forms.Form, user: Any) -> None:
    """The form's `project` field lists the user's projects, preselected when they have only one."""
    projects = projects_of(user)
    field = cast("forms.ModelChoiceField[Project]", form.fields["project"])
    field.queryset = projects
    if len(projects) == 1:
        form.initial.setdefault("project", projects[0].pk)


class NetworkForm(forms.Form):
    project = forms.ModelChoiceField(queryset=Project.objects.none(), help_text="Who may see the network")
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

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _project_choices(self, user)


class ProbeSetForm(forms.Form):
    project = forms.ModelChoiceField(queryset=Project.objects.none(), help_text="Who may see the probe set")
    name = forms.CharField(max_length=200)
    path = forms.CharField(
        max_length=1000, help_text="A Broden-format folder the workers can read, or s3://bucket/prefix"
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _project_choices(self, user)


class RunForm(forms.Form):
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), help_text="The network and the probe set must be this project's"
    )
    name = forms.CharField(max_length=200)
    network = forms.ModelChoiceField(queryset=Network.objects.none())
    probe_set = forms.ModelChoiceField(queryset=ProbeSet.objects.none(), label="Probe set")
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

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _project_choices(self, user)
        network = cast("forms.ModelChoiceField[Network]", self.fields["network"])
        network.queryset = Network.objects.visible_to(user).filter(status=Readiness.READY).order_by("name")
        probe_set = cast("forms.ModelChoiceField[ProbeSet]", self.fields["probe_set"])
        probe_set.queryset = ProbeSet.objects.visible_to(user).filter(status=Readiness.READY).order_by("name")

    def launch_kwargs(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["layers"] = [layer for layer in data["layers"].split(",") if layer.strip()]
        return data
