"""Dissection labels joined to unit contributions, and the overlay's arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dissection.cam.images import ImageError, load_image, preprocess
from dissection.cam.units import (
    Explanation,
    UnitContribution,
    UnitLabel,
    UnitLabelError,
    explain_predictions,
    read_unit_labels,
)
from dissection.networks import ToyNet
from dissection.overlay import blend, caption, jet, normalize, render_overlay, upsample

RESULT = {
    "schema": 1,
    "layer": "conv4",
    "num_units": 3,
    "units": [
        {"unit": 1, "channel": 0, "label": "house", "category": "object", "iou": 0.31, "interpretable": True},
        {"unit": 2, "channel": 1, "label": "red-c", "category": "color", "iou": 0.02, "interpretable": False},
        {"unit": 3, "channel": 2, "label": "wheel", "category": "part", "iou": 0.12, "interpretable": True},
    ],
}


def test_read_unit_labels_keys_by_zero_based_channel(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(RESULT))
    labels = read_unit_labels(path, layer="conv4", channels=3)
    assert labels[0] == UnitLabel("house", "object", 0.31, True)
    assert labels[1].interpretable is False
    without_channel = {**RESULT, "units": [{"unit": 3, "label": "wheel"}]}
    path.write_text(json.dumps(without_channel))
    assert read_unit_labels(path) == {2: UnitLabel("wheel", None, None, True)}  # `unit` counts from 1
    path.write_text(json.dumps(RESULT))
    with pytest.raises(UnitLabelError, match="dissects layer 'conv4', but the CAM feature layer is 'layer4'"):
        read_unit_labels(path, layer="layer4")
    with pytest.raises(UnitLabelError, match="has 3 units, but layer 'conv4' has 128 channels"):
        read_unit_labels(path, layer="conv4", channels=128)
    path.write_text("{not json")
    with pytest.raises(UnitLabelError, match="not a readable JSON file"):
        read_unit_labels(path)
    path.write_text("[]")
    with pytest.raises(UnitLabelError, match="no 'units' list"):
        read_unit_labels(path)
    with pytest.raises(UnitLabelError, match="does not exist"):
        read_unit_labels(tmp_path / "missing.json")


def test_explanations_carry_labels_and_read_like_the_talk() -> None:
    torch.manual_seed(0)
    model = ToyNet(num_classes=3, width=4).eval()  # conv4 has 16 channels
    labels = {k: UnitLabel(f"concept{k}", "object", 0.2, interpretable=k % 2 == 0) for k in range(16)}
    (explained,) = explain_predictions(model, torch.randn(1, 3, 16, 16), topk=1, labels=labels)
    explanation = explained[0]
    assert all(u.label is labels[u.channel] for u in explanation.units)
    text = explanation.summary("cafeteria", n=3)
    expected = ", ".join(
        f"unit {u.channel + 1}" + (f" concept{u.channel}" if u.channel % 2 == 0 else "")
        for u in explanation.units[:3]
    )
    assert text == f"cafeteria {explanation.probability:.2f}: {expected}"
    handmade = Explanation(4, 2.0, 0.9, 0.1, [UnitContribution(21, 1.0, 1.0, 1.0, UnitLabel("face"))])
    assert handmade.summary("Cafeteria") == "Cafeteria 0.90: unit 22 face"
    broden = Explanation(4, 2.0, 0.9, 0.1, [UnitContribution(97, 1.0, 1.0, 1.0, UnitLabel("white-c"))])
    assert broden.summary("Cafeteria") == "Cafeteria 0.90: unit 98 white"  # no Broden suffix


def test_upsample_is_bilinear_with_half_pixel_centres() -> None:
    raw = torch.tensor([[0.0, 4.0]])
    up = upsample(raw, 1, 4)
    # Output pixel centres 0.5..3.5 map to input coordinates -0.25, 0.25, 0.75, 1.25 (clamped at the edges).
    assert np.allclose(up, [[0.0, 1.0, 3.0, 4.0]])


def test_normalize_jet_and_blend() -> None:
    values = np.array([[2.0, 4.0], [6.0, 10.0]])
    assert np.allclose(normalize(values), [[0.0, 0.25], [0.5, 1.0]])
    assert not normalize(np.full((2, 2), 3.0)).any()
    colours = jet(np.array([[0.0, 1.0]]))
    assert colours[0, 0, 2] > 100 and colours[0, 0, 0] == 0  # low: blue
    assert colours[0, 1, 0] > 100 and colours[0, 1, 2] == 0  # high: red
    image = np.full((1, 1, 3), 200, np.uint8)
    heat = np.array([[[255, 0, 100]]], np.uint8)
    assert blend(image, heat).tolist() == [[[176, 100, 130]]]  # 0.3 * heat + 0.5 * image
    assert blend(image, heat, 1.0, 1.0).tolist() == [[[255, 200, 255]]]  # clipped


def test_render_overlay_and_caption() -> None:
    picture = Image.new("RGB", (32, 32), (128, 128, 128))
    raw = torch.zeros(4, 4)
    raw[0, 0] = 1.0
    plain = render_overlay(picture, raw, min_side=32)
    pixels = np.asarray(plain)
    assert plain.size == (32, 32)
    assert pixels[0, 0, 0] > pixels[0, 0, 2]  # the hot corner is red
    assert pixels[31, 31, 2] > pixels[31, 31, 0]  # the cold corner is blue
    enlarged = render_overlay(picture, raw, lines=["house 0.91", "tree 0.05"], min_side=64)
    assert enlarged.size == (64, 64)
    captioned = caption(plain, ["house 0.91"])
    assert not np.array_equal(np.asarray(captioned), pixels)


def test_unreadable_images_raise_image_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"cannot read image .*broken\.png"):
        load_image(broken)
    with pytest.raises(ImageError, match=r"missing\.png does not exist"):
        load_image(tmp_path / "missing.png")


def test_preprocess_resizes_without_cropping_or_keeps_a_common_size() -> None:
    white = Image.new("RGB", (40, 20), (255, 255, 255))
    batch = preprocess([white, white], 16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert batch.shape == (2, 3, 16, 16) and torch.allclose(batch, torch.ones_like(batch))
    assert preprocess([white], None).shape == (1, 3, 20, 40)
    with pytest.raises(ImageError, match=r"images of different sizes \[\(20, 20\), \(40, 20\)\]"):
        preprocess([white, Image.new("RGB", (20, 20))], None)
