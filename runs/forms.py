"""Forms of the run pages: parse what a requester types; `runs.services` re-checks every rule.

Every choice list holds only what the requester may see (`runs.access`): their projects, and the networks
and probe sets of those projects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from django import forms

from runs.access import projects_of
from runs.models import Network, ProbeSet, Project, Readiness
from runs.selectors import UNIT_SORTS, UnitFilter


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
    step = forms.IntegerField(
        required=False,
        min_value=0,
        label="Training step",
        help_text="For a checkpoint: the step it was saved at (comparisons order runs by it)",
    )
    base = forms.ModelChoiceField(
        queryset=Network.objects.none(),
        required=False,
        label="Version of",
        help_text="The network this is a checkpoint or a fine-tuned copy of",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _project_choices(self, user)
        base = cast("forms.ModelChoiceField[Network]", self.fields["base"])
        base.queryset = Network.objects.visible_to(user).order_by("name")


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
        for name in ("network", "networks"):
            if name in self.fields:
                networks = cast("forms.ModelChoiceField[Network]", self.fields[name])
                networks.queryset = (
                    Network.objects.visible_to(user).filter(status=Readiness.READY).order_by("name")
                )
        probe_set = cast("forms.ModelChoiceField[ProbeSet]", self.fields["probe_set"])
        probe_set.queryset = ProbeSet.objects.visible_to(user).filter(status=Readiness.READY).order_by("name")

    def launch_kwargs(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["layers"] = [layer for layer in data["layers"].split(",") if layer.strip()]
        return data


class RunSeriesForm(RunForm):
    """One run per picked network (checkpoints of a training series, a fine-tuned copy) with the same probe
    set, layers and settings; `name` prefixes each run's name."""

    network = None  # type: ignore[assignment]
    networks = forms.ModelMultipleChoiceField(
        queryset=Network.objects.none(),
        help_text="Two or more: each is dissected by a run of its own, named NAME <network>",
    )
    field_order = ["project", "name", "networks"]


class UnitFilterForm(forms.Form):
    """The run page's filter and sort of a layer's units (GET). Invalid values are shown as errors and the
    list stays unfiltered."""

    label = forms.CharField(required=False, max_length=200, label="Label contains")
    category = forms.ChoiceField(required=False, choices=[("", "any")])
    min_iou = forms.FloatField(required=False, min_value=0.0, max_value=1.0, label="IoU at least")
    interpretable = forms.BooleanField(required=False, label="Interpretable only")
    sort = forms.ChoiceField(required=False, choices=[(key, text) for key, (text, _) in UNIT_SORTS.items()])

    def __init__(self, *args: Any, categories: Sequence[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        category = cast("forms.ChoiceField", self.fields["category"])
        category.choices = [("", "any"), *((name, name) for name in categories)]

    def unit_filter(self) -> UnitFilter:
        """The filter the valid input asks for; no filter when the input is not valid."""
        if not self.is_valid():
            return UnitFilter()
        data = self.cleaned_data
        return UnitFilter(
            label=data["label"].strip(),
            category=data["category"],
            min_iou=data["min_iou"],
            interpretable_only=data["interpretable"],
            sort=data["sort"] or "iou",
        )
