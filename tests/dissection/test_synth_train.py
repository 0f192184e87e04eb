"""The synthetic probe set and the toy model: deterministic, all six categories, off-centre objects."""

from __future__ import annotations

import csv
import filecmp

import numpy as np
import torch

from dissection.broden import load_probe_set
from dissection.networks import load_model
from dissection.synth import make_probe_set
from dissection.train import train_toy


def test_synth_is_deterministic_and_covers_every_category(tmp_path):
    a = make_probe_set(tmp_path / "a", images=12, size=32, seed=4)
    b = make_probe_set(tmp_path / "b", images=12, size=32, seed=4)
    for name in (
        "index.csv",
        "label.csv",
        "boxes.csv",
        "images/synth/000005.png",
        "images/synth/000005_color.png",
    ):
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    probe = load_probe_set(a)
    assert probe.categories == ("color", "object", "part", "material", "scene", "texture")
    assert probe.image_size == (32, 32) and probe.mask_size == (16, 16)
    present = dict.fromkeys(probe.categories, 0)
    for i in range(len(probe)):
        numbers, _ = probe.load_labels(i)
        for cat in {probe.categories[probe.label_category[n]] for n in numbers}:
            present[cat] += 1
    assert all(count > 0 for count in present.values()), present
    assert min(present.values()) < len(probe)  # some images lack some categories


def test_boxes_are_off_centre_and_match_the_object_masks(probe_set_dir):
    classes = (probe_set_dir / "classes.txt").read_text().split()
    with (probe_set_dir / "boxes.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    probe = load_probe_set(probe_set_dir)
    assert len(rows) == len(probe) and {int(r["class"]) for r in rows} == set(range(len(classes)))
    centres = np.array([[(int(r["x1"]) + int(r["x2"])) / 2, (int(r["y1"]) + int(r["y2"])) / 2] for r in rows])
    assert np.mean(np.abs(centres - 31.5).max(1) > 8) > 0.4  # often off-centre
    with (probe_set_dir / "index.csv").open() as handle:
        index = list(csv.DictReader(handle))
    assert sum(";" in row["part"] for row in index) > 10  # two part layers in some images
    row = rows[3]
    x1, y1, x2, y2 = (int(row[k]) for k in ("x1", "y1", "x2", "y2"))
    assert 0 <= x1 <= x2 < 64 and 0 <= y1 <= y2 < 64 and row["name"] == classes[int(row["class"])]


def test_train_toy_is_deterministic(tmp_path):
    root = make_probe_set(tmp_path / "set", images=10, size=32)
    a = train_toy(root, tmp_path / "a.pt", epochs=1, progress=False, width=8)
    b = train_toy(root, tmp_path / "b.pt", epochs=1, progress=False, width=8)
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa["classes"] == ["house", "tree", "car", "ball", "flag"] and sa["width"] == 8
    assert all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in sa["state_dict"])
    assert load_model("toy", weights=a).conv1[0].out_channels == 8


def test_toy_weights_classify_held_out_images(toy_weights, tmp_path):
    from dissection.train import load_images, read_classes

    held_out = make_probe_set(tmp_path / "held_out", images=60, size=64, seed=9)
    _, labels = read_classes(held_out)
    names = sorted(labels)
    model = load_model("toy", weights=toy_weights)
    with torch.no_grad():
        predicted = model(load_images(held_out, names)).argmax(1)
    accuracy = (predicted == torch.tensor([labels[n] for n in names])).float().mean().item()
    assert accuracy > 0.6  # chance is 0.2
