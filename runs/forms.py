"""Forms of the run pages: parse what a requester types; `runs.services` re-checks every rule.

Every choice list holds only what the requester may see (`runs.access`): their projects, and the networks
and probe sets of those projects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from django import forms

from runs.access import projects_of
from runs.errors import RunError
from runs.models import Network, ProbeSet, Project, Readiness
from runs.selectors import UNIT_SORTS, UnitFilter
from runs.services import segmenter_concepts_read


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
    kind = forms.ChoiceField(
        choices=Network.Kind.choices,
        initial=Network.Kind.CLASSIFIER,
        help_text="A generator is dissected with a segmenter, which labels its samples",
    )
    architecture = forms.CharField(
        max_length=100,
        required=False,
        help_text="toy, or a torchvision name such as resnet18; toy-generator or toy-segmenter for a "
        "generator or segmenter (not for TorchScript)",
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
    latent_shape = forms.CharField(
        max_length=100,
        required=False,
        label="Latent shape",
        help_text="A TorchScript generator's latent shape, e.g. 512 or 512,1,1",
    )
    concepts = forms.FileField(
        required=False,
        label="Concepts",
        help_text="A TorchScript segmenter's classes: CSV with name,category (or a JSON list), one per "
        "output class in order",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _project_choices(self, user)
        base = cast("forms.ModelChoiceField[Network]", self.fields["base"])
        base.queryset = Network.objects.visible_to(user).order_by("name")

    def clean_latent_shape(self) -> list[int]:
        text = self.cleaned_data["latent_shape"].strip()
        try:
            return [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
        except ValueError:
            raise forms.ValidationError(f"{text!r} is not sizes separated by commas, e.g. 512,1,1") from None

    def clean_concepts(self) -> list[dict[str, str]]:
        upload = self.cleaned_data["concepts"]
        if not upload:
            return []
        try:
            return segmenter_concepts_read(data=upload.read(), filename=upload.name or "concepts")
        except RunError as exc:
            raise forms.ValidationError(str(exc).removeprefix("Concepts: ")) from None


class ProbeSetForm(forms.Form):
    project = forms.ModelChoiceField(queryset=Project.objects.none(), help_text="Who may see the probe set")
    name = forms.CharField(max_length=200)
    source_format = forms.ChoiceField(
        choices=ProbeSet.Format.choices,
        initial=ProbeSet.Format.BRODEN,
        required=False,
        label="Format",
        help_text="Any format but Broden is converted by a worker; the dashboard shows its progress",
    )
    path = forms.CharField(
        max_length=1000,
        help_text="Broden: a folder the workers can read, or s3://bucket/prefix. Other formats: a path in "
        "the data folder (PROBE_SET_SOURCE_ROOT); COCO: the annotation JSON",
    )
    segmenter = forms.ModelChoiceField(
        queryset=Network.objects.none(),
        required=False,
        help_text="For images labelled by a segmenter: the registered segmenter network",
    )
    image_size = forms.IntegerField(
        min_value=8,
        max_value=1024,
        initial=224,
        required=False,
        label="Image size",
        help_text="For a conversion: the side images are resized to, in px (masks at half of it)",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _project_choices(self, user)
        segmenter = cast("forms.ModelChoiceField[Network]", self.fields["segmenter"])
        segmenter.queryset = (
            Network.objects.visible_to(user)
            .filter(kind=Network.Kind.SEGMENTER, status=Readiness.READY)
            .order_by("name")
        )


class RunForm(forms.Form):
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), help_text="The network and the probe set must be this project's"
    )
    name = forms.CharField(max_length=200)
    network = forms.ModelChoiceField(queryset=Network.objects.none())
    probe_set = forms.ModelChoiceField(
        queryset=ProbeSet.objects.none(), label="Probe set", required=False, help_text="For a classifier"
    )
    segmenter = forms.ModelChoiceField(
        queryset=Network.objects.none(),
        required=False,
        help_text="For a generator: labels its samples with its concepts",
    )
    samples = forms.IntegerField(
        min_value=2, required=False, initial=1000, help_text="For a generator: samples to dissect it on"
    )
    seed = forms.IntegerField(
        min_value=0, required=False, initial=0, help_text="For a generator: sample i is drawn from (seed, i)"
    )
    layers = forms.CharField(max_length=1000, help_text="Comma-separated layer names, e.g. conv3, conv4")
    tokens = forms.CharField(
        max_length=32,
        required=False,
        initial="auto",
        label="Token rule",
        help_text="How a transformer layer's tokens become maps: auto (inferred; the class and register "
        "tokens dropped), patches, cls, cls+K (K register tokens), channels-last (swin) or none",
    )
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
        ready = Network.objects.visible_to(user).filter(status=Readiness.READY).order_by("name")
        for name in ("network", "networks"):
            if name in self.fields:
                networks = cast("forms.ModelChoiceField[Network]", self.fields[name])
                networks.queryset = ready.exclude(kind=Network.Kind.SEGMENTER)
        if "segmenter" in self.fields:
            segmenters = cast("forms.ModelChoiceField[Network]", self.fields["segmenter"])
            segmenters.queryset = ready.filter(kind=Network.Kind.SEGMENTER)
        probe_set = cast("forms.ModelChoiceField[ProbeSet]", self.fields["probe_set"])
        probe_set.queryset = ProbeSet.objects.visible_to(user).filter(status=Readiness.READY).order_by("name")
        # Network id -> kind, for the page's script that shows a generator's fields only to a generator.
        self.network_kinds = {str(pk): kind for pk, kind in ready.values_list("pk", "kind")}
        # Network id -> {token layer: "<rule> · <reading>"}, for the page's list of the chosen network's
        # transformer layers and their token rule.
        self.network_tokens = {
            str(pk): layers for pk, layers in ready.values_list("pk", "token_layers") if layers
        }

    def launch_kwargs(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["layers"] = [layer for layer in data["layers"].split(",") if layer.strip()]
        data["tokens"] = data.get("tokens") or "auto"
        return data


class RunSeriesForm(RunForm):
    """One run per picked network (checkpoints of a training series, a fine-tuned copy) with the same probe
    set, layers and settings; `name` prefixes each run's name."""

    network = None  # type: ignore[assignment]
    segmenter = None  # type: ignore[assignment]
    samples = None  # type: ignore[assignment]
    seed = None  # type: ignore[assignment]
    probe_set = forms.ModelChoiceField(queryset=ProbeSet.objects.none(), label="Probe set")
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


class FeatvizForm(forms.Form):
    """Feature visualization of one layer's units (`runs.featviz.featviz_launch` re-checks the bounds)."""

    layer = forms.ChoiceField(choices=())
    steps = forms.IntegerField(min_value=1, max_value=4096, initial=256, help_text="Adam steps per image")
    size = forms.IntegerField(min_value=16, max_value=512, initial=128, help_text="Square, in px")
    images = forms.IntegerField(
        min_value=1, max_value=8, initial=1, label="Images per unit", help_text="Above 1: diverse images"
    )

    def __init__(self, *args: Any, layers: Sequence[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["layer"]).choices = [(layer, layer) for layer in layers]
