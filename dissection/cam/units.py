"""Predictions explained through their units: logit_c = b_c + Σ_k w_k^c · mean f_k, each term joined with the
unit's dissection label."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dissection.cam.heads import GapHead, detect_gap_head, head_parameters
from dissection.cam.maps import ClassChoice, check_images, gap_features, select_classes
from dissection.concepts import concept_display
from dissection.errors import DissectionError


class UnitLabelError(DissectionError):
    """A dissection result file cannot be read as per-unit labels."""


@dataclass(frozen=True)
class UnitLabel:
    """A unit's dissection label, as far as the result file gives it."""

    label: str
    category: str | None = None
    iou: float | None = None
    interpretable: bool = True


@dataclass(frozen=True)
class UnitContribution:
    """What one channel of the feature map adds to a logit; `unit` numbers it from 1 as dissection reports
    do."""

    channel: int
    weight: float
    mean_activation: float
    contribution: float
    label: UnitLabel | None = None

    @property
    def unit(self) -> int:
        return self.channel + 1


@dataclass(frozen=True)
class Explanation:
    """One class score of one image as bias + the contribution of each unit, largest first."""

    class_index: int
    logit: float
    probability: float
    bias: float
    units: list[UnitContribution] = field(repr=False)

    def summary(self, class_name: str | None = None, n: int = 3) -> str:
        """The talk's one-liner: "cafeteria 0.90: unit 22 face, unit 2 lamp, unit 42 trademark"."""
        name = class_name if class_name is not None else f"class {self.class_index}"
        parts = []
        for unit in self.units[:n]:
            text = f"unit {unit.unit}"
            if unit.label is not None and unit.label.interpretable:
                text += f" {concept_display(unit.label.label)}"
            parts.append(text)
        return f"{name} {self.probability:.2f}: " + ", ".join(parts)


def unit_contributions(features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """w_k^c · mean_xy f_k for each image's classes: N x k x channels; their sum + b_c is the logit."""
    return weight[classes] * features.mean(dim=(2, 3)).unsqueeze(1)


def explain_predictions(
    model: nn.Module,
    images: torch.Tensor,
    *,
    classes: ClassChoice | None = None,
    topk: int | None = None,
    head: GapHead | None = None,
    labels: dict[int, UnitLabel] | None = None,
) -> list[list[Explanation]]:
    """For each image and class, the logit as bias + per-unit contributions, each joined with its label
    (`labels` by 0-based channel)."""
    check_images(images)
    head = head or detect_gap_head(model, images[:1])
    features, logits = gap_features(model, images, head)
    weight, bias = head_parameters(model, head)
    chosen = select_classes(logits, classes, topk)
    parts = unit_contributions(features, weight, chosen).cpu()
    means = features.mean(dim=(2, 3)).cpu()
    probabilities = torch.softmax(logits.float(), dim=1).cpu()
    weight, bias, logits, chosen = weight.cpu(), bias.cpu(), logits.cpu(), chosen.cpu()
    labels = labels or {}
    explained = []
    for n in range(chosen.shape[0]):
        per_image = []
        for j in range(chosen.shape[1]):
            c = int(chosen[n, j])
            order = torch.argsort(parts[n, j], descending=True, stable=True).tolist()
            units = [
                UnitContribution(
                    channel=channel,
                    weight=float(weight[c, channel]),
                    mean_activation=float(means[n, channel]),
                    contribution=float(parts[n, j, channel]),
                    label=labels.get(channel),
                )
                for channel in order
            ]
            per_image.append(
                Explanation(c, float(logits[n, c]), float(probabilities[n, c]), float(bias[c]), units)
            )
        explained.append(per_image)
    return explained


def _first(entry: dict[str, Any], keys: Sequence[str]) -> Any:
    return next((entry[key] for key in keys if entry.get(key) is not None), None)


def read_unit_labels(
    path: str | Path, *, layer: str | None = None, channels: int | None = None
) -> dict[int, UnitLabel]:
    """Labels by 0-based channel from a dissection result.json (`{"layer", "num_units", "units": [...]}`).

    Each unit entry gives `channel` (0-based) or else `unit` (1-based, NetDissect's numbering), and `label`,
    `category`, `iou`, `interpretable`; entries without a channel or label are skipped. A file of another
    layer than `layer`, or with another number of units than the layer's `channels`, is refused: its unit
    numbers would name other units.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnitLabelError(f"dissection result {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnitLabelError(f"{path}: not a readable JSON file ({error})") from None
    entries = data.get("units") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UnitLabelError(f"{path}: no 'units' list; expected a dissection result.json")
    found_layer = data.get("layer")
    if layer is not None and isinstance(found_layer, str) and found_layer != layer:
        raise UnitLabelError(f"{path} dissects layer {found_layer!r}, but the CAM feature layer is {layer!r}")
    count = data.get("num_units", len(entries))
    if channels is not None and isinstance(count, int) and count != channels:
        raise UnitLabelError(
            f"{path} has {count} units, but layer {layer or found_layer!r} has {channels} channels"
        )
    labels: dict[int, UnitLabel] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        channel = entry.get("channel")
        if not isinstance(channel, int) and isinstance(entry.get("unit"), int):
            channel = entry["unit"] - 1
        label = _first(entry, ("label", "concept"))
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0 or label is None:
            continue
        iou = entry.get("iou")
        if isinstance(iou, bool) or not isinstance(iou, int | float) or not math.isfinite(iou):
            iou = None
        labels[channel] = UnitLabel(
            str(label),
            str(entry["category"]) if entry.get("category") is not None else None,
            float(iou) if iou is not None else None,
            bool(entry.get("interpretable", True)),
        )
    return labels
