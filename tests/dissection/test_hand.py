"""Small cases computed by hand, in both semantics: an image-level label, two part layers, a label number
above 255 (R + 256 G), images that lack categories, and a unit that never fires."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dissection.broden import load_probe_set
from dissection.pipeline import dissect

LABELS = [
    (1, "red-c", "color"),
    (2, "cat", "object"),
    (3, "ear", "part"),
    (4, "eye", "part"),
    (5, "beach-s", "scene"),
    (6, "dotted", "texture"),
    (300, "grass", "material"),
]


@pytest.fixture
def hand_case(tmp_path, make_broden):
    """100 images, masks 4 x 4, maps 2 x 2. Unit 0 peaks at 8 in a corner of images 0 and 1 and at 4 in
    image 2 (so v397 = 4, v398 = v399 = 8 of its 400 values); unit 1 is all zeros."""
    red0 = np.zeros((4, 4), int)
    red0[0, :] = 1
    cat0 = np.zeros((4, 4), int)
    cat0[:, 0] = 2
    ear0 = np.zeros((4, 4), int)
    ear0[0, 0:2] = 3
    eye0 = np.zeros((4, 4), int)
    eye0[1, 1] = 4
    red1 = np.zeros((4, 4), int)
    red1[0, 0] = 1
    grass1 = np.zeros((4, 4), int)
    grass1[3, :] = 300
    images = [
        {"color": [red0], "object": [cat0], "part": [ear0, eye0]},
        {"color": [red1], "material": [grass1], "scene": [5]},
        {"texture": [6]},
    ] + [{} for _ in range(97)]
    root = make_broden(tmp_path / "set", labels=LABELS, images=images, image_size=8, mask_size=4)
    acts = np.zeros((100, 2, 2, 2), np.float32)
    acts[0, 0] = [[8, 0], [0, 0]]
    acts[1, 0] = [[0, 0], [0, 8]]
    acts[2, 0] = [[0, 4], [0, 0]]
    np.save(tmp_path / "acts.npy", acts)
    return root, tmp_path / "acts.npy"


def _run(hand_case, tmp_path, semantics):
    root, acts = hand_case
    out = dissect(
        root,
        tmp_path / f"out-{semantics}",
        layers=["L"],
        activations=acts,
        semantics=semantics,
        topk=3,
        batch_size=7,
        workers=0,
    )["L"]
    document = json.loads((out / "result.json").read_text())
    with (out / "tally.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return document, rows


def test_paper_semantics_by_hand(hand_case, tmp_path):
    # T0 = v397 + 0.005 (v398 - v397) = 4.02: the upsampled corner [[8, 6], [6, 4.5]] of images 0 and 1.
    document, rows = _run(hand_case, tmp_path, "paper")
    unit = document["units"][0]
    assert unit["threshold"] == pytest.approx(4.02)
    iou = {c["label"]: c["iou"] for c in unit["concepts"]}
    # ear 2/(4+2-2); red 2/(A_color 8 + G 5 - 2); cat 2/(4+4-2); grass 2/(4+4-2); eye 1/(4+1-1)
    assert unit["label"] == "ear" and unit["category"] == "part" and unit["iou"] == pytest.approx(0.5)
    assert iou == pytest.approx({"ear": 0.5, "cat": 1 / 3, "grass": 1 / 3, "eye": 0.25, "beach-s": 0.25})
    by_unit = {row["unit"]: row for row in rows}
    row = by_unit["1"]
    assert (row["color-label"], row["color-truth"], row["color-activation"], row["color-intersect"]) == (
        "red-c",
        "5",
        "8",
        "2",
    )
    assert float(row["color-iou"]) == pytest.approx(2 / 11)
    assert (row["scene-truth"], row["scene-activation"], row["scene-intersect"]) == ("16", "4", "4")
    assert (row["texture-label"], row["texture-truth"], row["texture-activation"]) == ("dotted", "16", "0")
    assert (row["material-label"], row["material-truth"], row["material-intersect"]) == ("grass", "4", "2")
    assert [r["unit"] for r in rows] == ["1", "2"]
    silent = document["units"][1]
    assert silent["threshold"] == 0.0 and silent["iou"] == 0.0 and not silent["interpretable"]
    assert silent["label"] == "red-c"  # all IoUs 0: first category, lowest label number
    assert by_unit["2"]["color-activation"] == "0" and by_unit["2"]["part-intersect"] == "0"
    assert [image["index"] for image in unit["images"]] == [0, 1, 2]
    assert [image["activation"] for image in unit["images"]] == [8.0, 8.0, 4.0]
    assert document["summary"]["interpretable"] == 1 and document["summary"]["per_category"]["part"] == 1


def test_netdissect_lite_semantics_by_hand(hand_case, tmp_path):
    # T0 = hazen: v397 + 0.498 (v398 - v397) ≈ 5.992: only 8, 6, 6 of each corner; A counts an image for a
    # category only when a label of it lies under the mask, so image 1's red pixel does not add to color.
    document, rows = _run(hand_case, tmp_path, "netdissect-lite")
    unit = document["units"][0]
    acts = np.load(hand_case[1])
    assert unit["threshold"] == pytest.approx(
        np.quantile(acts[:, 0].astype(float).ravel(), 994 / 999, method="hazen")
    )
    assert unit["threshold"] == pytest.approx(4 + 4 * (400 * 994 / 999 - 0.5 - 397))
    iou = {c["label"]: c["iou"] for c in unit["concepts"]}
    assert unit["label"] == "ear" and unit["iou"] == pytest.approx(2 / 3)
    assert iou == pytest.approx({"ear": 2 / 3, "red-c": 1 / 3, "cat": 0.4, "grass": 0.4, "beach-s": 3 / 16})
    row = next(r for r in rows if r["unit"] == "1")
    assert (row["color-activation"], row["object-activation"], row["scene-activation"]) == ("3", "3", "3")
    assert (row["part-label"], row["part-intersect"]) == ("ear", "2")


def test_primary_category_is_the_largest_coverage_ties_to_the_later(tmp_path, make_broden):
    labels = [(1, "a", "object"), (2, "b", "object"), (3, "c", "object")]
    coverage = {
        (1, "object"): 3.0,
        (1, "part"): 1.0,
        (2, "object"): 1.0,
        (2, "part"): 1.0,
        (3, "object"): 1.0,
        (3, "part"): 2.0,
    }
    layer = np.ones((4, 4), int)
    root = make_broden(tmp_path, labels=labels, images=[{"object": [layer]}], coverage=coverage)
    probe = load_probe_set(root)
    assert [probe.categories[probe.label_category[n]] for n in (1, 2, 3)] == ["object", "part", "part"]


def test_two_part_layers_and_image_level_labels_decode_into_one_onehot(hand_case):
    probe = load_probe_set(hand_case[0])
    numbers, onehot = probe.load_labels(0)
    assert numbers.tolist() == [1, 2, 3, 4]
    assert onehot.sum(1).tolist() == [4, 4, 2, 1]
    numbers, onehot = probe.load_labels(1)
    assert numbers.tolist() == [1, 5, 300]
    assert onehot.sum(1).tolist() == [1, 16, 4]
    numbers, onehot = probe.load_labels(5)
    assert numbers.size == 0 and onehot.shape == (0, 16)
