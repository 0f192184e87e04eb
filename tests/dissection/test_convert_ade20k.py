"""`convert ade20k` on a tiny ADE20K written by the test in the dataset's own layout (`_seg.png` class code
⌊R/10⌋·256 + G, instances in B, `_parts_<k>.png`, per-image JSON): objects, parts and scenes checked against
hand-made masks, numbers, categories and coverage; bad input refused, nothing written."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dissection.broden import load_probe_set
from dissection.cli import main
from dissection.networks import ToyNet
from dissection.pipeline import dissect

BUILDING, CAR, DOOR, TREE, WHEEL = 312, 401, 774, 2855, 2978
NAMES = {
    BUILDING: "building, edifice",
    CAR: "car, auto, automobile, machine, motorcar",
    DOOR: "door",
    TREE: "tree",
    WHEEL: "wheel",
}

# Street (training): building on the top half, a car (rows 4-7, cols 0-3) with a wheel and a door as parts,
# a tree at rows 4-7, cols 6-7. Bedroom (validation, no scene in its JSON): a door as an object, left half.
STREET_OBJECTS = np.zeros((8, 8), np.int64)
STREET_OBJECTS[:4] = BUILDING
STREET_OBJECTS[4:, :4] = CAR
STREET_OBJECTS[4:, 6:] = TREE
STREET_PARTS = np.zeros((8, 8), np.int64)
STREET_PARTS[6:, :2] = WHEEL
STREET_PARTS[4:6, 2:4] = DOOR
BEDROOM_OBJECTS = np.zeros((8, 8), np.int64)
BEDROOM_OBJECTS[:, :4] = DOOR


def encode(codes: np.ndarray, instances: np.ndarray | None = None) -> Image.Image:
    """ADE20K's encoding: R = ⌊code / 256⌋·10 (+ up to 9, which ⌊R/10⌋ ignores), G = code mod 256."""
    rgb = np.zeros((*codes.shape, 3), np.uint8)
    rgb[..., 0] = (codes // 256) * 10 + (codes > 0) * 3
    rgb[..., 1] = codes % 256
    rgb[..., 2] = 0 if instances is None else instances
    return Image.fromarray(rgb)


def objects(*entries: tuple[int, int]) -> list[dict[str, object]]:
    return [
        {"id": i, "name": NAMES[code], "name_ndx": code, "parts": {"part_level": level}}
        for i, (code, level) in enumerate(entries)
    ]


@pytest.fixture
def ade(tmp_path: Path) -> Path:
    root = tmp_path / "ADE20K_2021_17_01"
    street = root / "images" / "ADE" / "training" / "urban" / "street"
    bedroom = root / "images" / "ADE" / "validation" / "home" / "bedroom"
    for folder in (street, bedroom):
        folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for folder, name in ((street, "ADE_train_00000001"), (bedroom, "ADE_val_00000002")):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{name}.jpg")
    encode(STREET_OBJECTS, rng.integers(0, 9, (8, 8))).save(street / "ADE_train_00000001_seg.png")
    encode(STREET_PARTS).save(street / "ADE_train_00000001_parts_1.png")
    street_json = {
        "annotation": {
            "scene": ["outdoor", "urban", "street"],
            "object": objects((BUILDING, 0), (CAR, 0), (TREE, 0), (WHEEL, 1), (DOOR, 1)),
        }
    }
    (street / "ADE_train_00000001.json").write_text(json.dumps(street_json))
    encode(BEDROOM_OBJECTS).save(bedroom / "ADE_val_00000002_seg.png")
    (bedroom / "ADE_val_00000002.json").write_text(json.dumps({"annotation": {"object": objects((DOOR, 0))}}))
    return root


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def convert(args: list[str]) -> int:
    return main(["convert", "ade20k", *args, "--quiet"])


def test_objects_parts_and_scenes_convert_to_hand_made_labels(ade: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert convert([str(ade), str(out), "--size", "8", "--mask-size", "8"]) == 0
    probe = load_probe_set(out)
    # Classes by ADE code, then scenes by name; WordNet names split into name and synonyms.
    assert probe.label_names[1:] == ("building", "car", "door", "tree", "wheel", "bedroom-s", "street-s")
    assert probe.categories == ("object", "part", "scene")
    category = {
        name: probe.categories[probe.label_category[n]] for n, name in enumerate(probe.label_names) if n
    }
    # door: an object in the bedroom (32 px) and a part in the street (4 px): object, where it covers most.
    assert category == {
        "building": "object",
        "car": "object",
        "door": "object",
        "tree": "object",
        "wheel": "part",
        "bedroom-s": "scene",
        "street-s": "scene",
    }
    labels = {row["name"]: row for row in rows(out / "label.csv")}
    assert labels["car"]["syns"] == "auto;automobile;machine;motorcar"
    assert labels["building"]["syns"] == "edifice"
    assert labels["door"]["category"] == "object(1);part(1)"
    parts = {row["name"]: row for row in rows(out / "c_part.csv")}
    assert set(parts) == {"door", "wheel"}
    assert float(parts["door"]["coverage"]) == pytest.approx(4 / 64)
    assert float(parts["wheel"]["coverage"]) == pytest.approx(4 / 64)
    objects_csv = {row["name"]: row for row in rows(out / "c_object.csv")}
    assert float(objects_csv["door"]["coverage"]) == pytest.approx(32 / 64)
    assert float(objects_csv["building"]["coverage"]) == pytest.approx(32 / 64)

    number = {name: n for n, name in enumerate(probe.label_names)}
    index = rows(out / "index.csv")
    assert [row["image"] for row in index] == ["ade20k/ADE_train_00000001.jpg", "ade20k/ADE_val_00000002.jpg"]
    assert [row["split"] for row in index] == ["train", "val"]
    assert index[0]["scene"] == str(number["street-s"]) and index[1]["scene"] == str(number["bedroom-s"])
    street = dict(zip(*probe.load_labels(0), strict=True))
    expected = {
        "building": STREET_OBJECTS == BUILDING,
        "car": STREET_OBJECTS == CAR,
        "tree": STREET_OBJECTS == TREE,
        "wheel": STREET_PARTS == WHEEL,
        "door": STREET_PARTS == DOOR,
        "street-s": np.ones((8, 8), bool),
    }
    assert {probe.label_names[n] for n in street} == set(expected)
    for name, mask in expected.items():
        assert street[number[name]].reshape(8, 8).tolist() == mask.astype(np.uint8).tolist(), name
    written = dissect(
        out, tmp_path / "d", layers=["conv4"], model=ToyNet().eval(), device="cpu", workers=0, topk=1
    )
    assert json.loads((written["conv4"] / "result.json").read_text())["num_images"] == 2


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("small_parts", r"ADE_train_00000001_parts_1.png: mask is 4x4 but ADE_train_00000001.jpg is 8x8"),
        ("unnamed_code", r"ADE_val_00000002_seg.png: class code 5 is not named by any ADE20K .json"),
        ("no_json", r"ADE_val_00000002.json is missing"),
        ("conflicting_name", r"name_ndx 774 is 'gate' here but 'door' in"),
    ],
)
def test_bad_input_is_refused_with_its_file_and_nothing_is_written(
    ade: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: str, message: str
) -> None:
    street = ade / "images" / "ADE" / "training" / "urban" / "street"
    bedroom = ade / "images" / "ADE" / "validation" / "home" / "bedroom"
    if breakage == "small_parts":
        encode(STREET_PARTS[:4, :4]).save(street / "ADE_train_00000001_parts_1.png")
    elif breakage == "unnamed_code":
        encode(np.full((8, 8), 5)).save(bedroom / "ADE_val_00000002_seg.png")
    elif breakage == "no_json":
        (bedroom / "ADE_val_00000002.json").unlink()
    else:
        document = {"annotation": {"object": [{"id": 0, "name": "gate", "name_ndx": DOOR, "parts": {}}]}}
        (bedroom / "ADE_val_00000002.json").write_text(json.dumps(document))
    out = tmp_path / "out"
    assert convert([str(ade), str(out)]) == 2
    error = capsys.readouterr().err
    assert re.search(message, error)
    assert not out.exists()
    partial = tmp_path / ".out.partial"
    if breakage == "unnamed_code":  # found when the second image is read: the first waits, to resume
        assert f"1 finished image(s) wait in {partial}; rerun to resume" in error
        assert len((partial / "progress.jsonl").read_text().splitlines()) == 1
    else:
        assert not partial.exists()
