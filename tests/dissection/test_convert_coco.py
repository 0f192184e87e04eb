"""`convert coco` on a tiny COCO written by the test: instances (a polygon, an uncompressed and a compressed
RLE, overlapping), COCO-Stuff and panoptic, checked against hand-made masks, numbers, categories and
coverage; the converted set dissects; malformed files are refused with their file and record, leaving
nothing behind."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils  # type: ignore[import-untyped]

from dissection.broden import load_probe_set
from dissection.cli import main
from dissection.networks import ToyNet
from dissection.pipeline import dissect

# Image 1 (8 x 8): a person polygon (x, y in [1, 5)), a crowd car as uncompressed RLE (columns 4-5, which
# overlaps the person in column 4), grass stuff on rows 6-7 (overlapping the car), an `other` stuff region.
# Image 2 (6 x 8, h x w): a person as compressed RLE.
PERSON_1 = np.zeros((8, 8), bool)
PERSON_1[1:5, 1:5] = True
CAR_1 = np.zeros((8, 8), bool)
CAR_1[:, 4:6] = True
GRASS_1 = np.zeros((8, 8), bool)
GRASS_1[6:, :] = True
PERSON_2 = np.zeros((6, 8), bool)
PERSON_2[2:6, 0:3] = True


def save_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """root/annotations/{instances,stuff,panoptic}_val2017.json, root/val2017/*.jpg, panoptic PNGs."""
    root = tmp_path / "coco"
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    (root / "val2017").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "val2017" / "000001.jpg")
    Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).save(root / "val2017" / "000002.jpg")
    images = [
        {"id": 1, "file_name": "000001.jpg", "height": 8, "width": 8},
        {"id": 2, "file_name": "000002.jpg", "height": 6, "width": 8},
    ]
    compressed = mask_utils.encode(np.asfortranarray(PERSON_2.astype(np.uint8)))
    save_json(
        root / "annotations" / "instances_val2017.json",
        {
            "images": images,
            "categories": [
                {"id": 3, "name": "car", "supercategory": "vehicle"},
                {"id": 1, "name": "person", "supercategory": "person"},
                {"id": 5, "name": "airplane", "supercategory": "vehicle"},
            ],
            "annotations": [
                {
                    "id": 7,
                    "image_id": 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]],
                },
                {
                    "id": 8,
                    "image_id": 1,
                    "category_id": 3,
                    "iscrowd": 1,
                    "segmentation": {"size": [8, 8], "counts": [32, 16, 16]},
                },
                {
                    "id": 9,
                    "image_id": 2,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": {"size": [6, 8], "counts": compressed["counts"].decode()},
                },
            ],
        },
    )
    save_json(
        root / "annotations" / "stuff_val2017.json",
        {
            "images": images,
            "categories": [
                {"id": 124, "name": "grass", "supercategory": "plant"},
                {"id": 171, "name": "wall-brick", "supercategory": "wall"},
                {"id": 183, "name": "other", "supercategory": "other"},
            ],
            "annotations": [
                {"id": 20, "image_id": 1, "category_id": 124, "segmentation": [[0, 6, 8, 6, 8, 8, 0, 8]]},
                {"id": 21, "image_id": 1, "category_id": 183, "segmentation": [[0, 0, 8, 0, 8, 1, 0, 1]]},
            ],
        },
    )
    return root


def convert(args: list[str]) -> int:
    return main(["convert", "coco", *args, "--quiet"])


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def label_masks(out: Path, index: int) -> dict[str, np.ndarray]:
    probe = load_probe_set(out)
    numbers, onehot = probe.load_labels(index)
    return {
        probe.label_names[n]: row.reshape(probe.mask_size).astype(bool)
        for n, row in zip(numbers, onehot, strict=True)
    }


def test_instances_and_stuff_convert_to_hand_made_masks(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    annotations = coco / "annotations"
    args = [
        str(annotations / "instances_val2017.json"),
        str(out),
        "--extra",
        str(annotations / "stuff_val2017.json"),
    ]
    assert convert([*args, "--size", "8", "--mask-size", "8"]) == 0
    probe = load_probe_set(out)
    # Numbered by category id; `other` dropped; things → object, plant → material, wall → region.
    assert probe.label_names[1:] == ("person", "car", "airplane", "grass", "wall-brick")
    assert probe.categories == ("object", "material", "region")
    assert [probe.categories[c] for c in probe.label_category[1:]] == [
        "object",
        "object",
        "object",
        "material",
        "region",
    ]
    assert all(image.image.startswith("coco/0000") for image in probe.images)
    assert {row["split"] for row in rows(out / "index.csv")} == {"val"}

    first = label_masks(out, 0)
    assert set(first) == {"person", "car", "grass"}
    assert (
        (first["person"] == PERSON_1).all()
        and (first["car"] == CAR_1).all()
        and (first["grass"] == GRASS_1).all()
    )
    index = rows(out / "index.csv")
    # person and car overlap in column 4: two object layers.
    assert index[0]["object"] == "coco/000001_object.png;coco/000001_object_2.png"
    second = label_masks(out, 1)  # 6 rows to 8: row i reads ⌊(2i + 1)·6 / 16⌋
    assert set(second) == {"person"} and (second["person"] == PERSON_2[[0, 1, 1, 2, 3, 4, 4, 5]]).all()

    objects = {row["name"]: row for row in rows(out / "c_object.csv")}
    assert objects["person"]["frequency"] == "2"
    assert float(objects["person"]["coverage"]) == pytest.approx(
        16 / 64 + 15 / 64
    )  # image 2: 5 of 8 resized rows x 3
    assert float(objects["car"]["coverage"]) == pytest.approx(16 / 64)
    assert objects["airplane"]["frequency"] == "0"
    assert [row["name"] for row in rows(out / "c_region.csv")] == ["wall-brick"]
    labels = {row["name"]: row for row in rows(out / "label.csv")}
    assert labels["grass"]["category"] == "material(1)" and labels["wall-brick"]["category"] == "region(0)"


def test_masks_are_resized_by_nearest_and_the_set_dissects(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    annotations = coco / "annotations"
    args = [
        str(annotations / "instances_val2017.json"),
        str(out),
        "--extra",
        str(annotations / "stuff_val2017.json"),
    ]
    assert convert([*args, "--size", "16", "--mask-size", "4x4"]) == 0
    first = label_masks(out, 0)
    assert (first["person"] == PERSON_1[1::2, 1::2]).all() and (first["car"] == CAR_1[1::2, 1::2]).all()
    second = label_masks(out, 1)  # 6 rows to 4: rows 0, 2, 3, 5 (centres 0.75, 2.25, 3.75, 5.25)
    assert (second["person"] == PERSON_2[[0, 2, 3, 5]][:, 1::2]).all()
    written = dissect(
        out, tmp_path / "dissect", layers=["conv4"], model=ToyNet().eval(), device="cpu", workers=0, topk=2
    )
    result = json.loads((written["conv4"] / "result.json").read_text())
    assert result["num_images"] == 2 and result["categories"] == ["object", "material", "region"]


def test_panoptic_segments_convert_by_their_png_ids(coco: Path, tmp_path: Path) -> None:
    annotations = coco / "annotations"
    ids = np.zeros((8, 8), np.int64)
    ids[1:5, 1:5] = 1  # person
    ids[5:, :] = 770  # sky: R = 2, G = 3
    ids[0, :] = 65536 + 5  # grass: B = 1
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(annotations / "panoptic_val2017" / "000001.png")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(annotations / "panoptic_val2017" / "000002.png")
    document = {
        "images": json.loads((annotations / "instances_val2017.json").read_text())["images"],
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
            {"id": 187, "name": "sky-other-merged", "supercategory": "sky", "isthing": 0},
            {"id": 193, "name": "grass-merged", "supercategory": "plant", "isthing": 0},
        ],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "000001.png",
                "segments_info": [
                    {"id": 1, "category_id": 1, "iscrowd": 0},
                    {"id": 770, "category_id": 187, "iscrowd": 0},
                    {"id": 65541, "category_id": 193, "iscrowd": 0},
                ],
            },
            {"image_id": 2, "file_name": "000002.png", "segments_info": []},
        ],
    }
    out = tmp_path / "out"
    assert (
        convert(
            [
                str(save_json(annotations / "panoptic_val2017.json", document)),
                str(out),
                "--size",
                "8",
                "--mask-size",
                "8",
            ]
        )
        == 0
    )
    probe = load_probe_set(out)
    assert probe.label_names[1:] == ("person", "sky-other-merged", "grass-merged")
    assert probe.categories == ("object", "material", "region")
    first = label_masks(out, 0)
    assert (first["person"] == (ids == 1)).all()
    assert (first["sky-other-merged"] == (ids == 770)).all() and (
        first["grass-merged"] == (ids == 65541)
    ).all()
    assert label_masks(out, 1) == {}
    index = rows(out / "index.csv")[0]
    assert (index["object"], index["material"], index["region"]) == (
        "coco/000001_object.png",
        "coco/000001_material.png",
        "coco/000001_region.png",
    )


def break_instances(coco: Path, change: str) -> None:
    path = coco / "annotations" / "instances_val2017.json"
    document = json.loads(path.read_text())
    if change == "missing_image":
        document["images"].append({"id": 9, "file_name": "000009.jpg", "height": 8, "width": 8})
    elif change == "unknown_category":
        document["annotations"].append(
            {"id": 17, "image_id": 1, "category_id": 99, "segmentation": [[0, 0, 2, 0, 2, 2]]}
        )
    elif change == "unknown_image":
        document["annotations"].append(
            {"id": 18, "image_id": 4, "category_id": 1, "segmentation": [[0, 0, 2, 0, 2, 2]]}
        )
    elif change == "rle_size":
        document["annotations"][1]["segmentation"]["size"] = [8, 9]
    elif change == "short_polygon":
        document["annotations"][0]["segmentation"] = [[1, 1, 5, 1]]
    elif change == "wrong_image_size":
        Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(coco / "val2017" / "000002.jpg")
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing_image", r"instances_val2017.json image id 9: image file .*000009.jpg is missing"),
        ("unknown_category", r"instances_val2017.json annotation id 17: category_id 99 is not in categories"),
        ("unknown_image", r"instances_val2017.json annotation id 18: image_id 4 is not in images"),
        ("rle_size", r"annotation id 8: RLE size \[8, 9\] is not the image's \[height, width\] \[8, 8\]"),
        ("short_polygon", r"annotation id 7: a polygon must list at least three x, y pairs"),
        ("wrong_image_size", r"image id 2: .*000002.jpg is 6x7, the JSON says height x width = 6x8"),
    ],
)
def test_malformed_annotations_name_file_and_record_and_write_nothing(
    coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, message: str
) -> None:
    break_instances(coco, change)
    out = tmp_path / "out"
    assert convert([str(coco / "annotations" / "instances_val2017.json"), str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_a_panoptic_png_with_an_unlisted_segment_is_refused_and_nothing_is_written(
    coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    annotations = coco / "annotations"
    Image.fromarray(np.full((8, 8, 3), 4, np.uint8)).save(annotations / "panoptic_val2017" / "000001.png")
    document = {
        "images": json.loads((annotations / "instances_val2017.json").read_text())["images"][:1],
        "categories": [{"id": 1, "name": "person", "supercategory": "person", "isthing": 1}],
        "annotations": [
            {"image_id": 1, "file_name": "000001.png", "segments_info": [{"id": 1, "category_id": 1}]}
        ],
    }
    out = tmp_path / "out"
    assert convert([str(save_json(annotations / "panoptic_val2017.json", document)), str(out)]) == 2
    error = capsys.readouterr().err
    assert (
        "000001.png: segment id 263172 is not in segments_info of panoptic_val2017.json image id 1" in error
    )
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_an_unmapped_stuff_supercategory_asks_for_a_mapping(
    coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stuff = coco / "annotations" / "stuff_val2017.json"
    document = json.loads(stuff.read_text())
    document["categories"].append({"id": 200, "name": "lava", "supercategory": "volcanic", "isthing": 0})
    stuff.write_text(json.dumps(document))
    args = [
        str(coco / "annotations" / "instances_val2017.json"),
        str(tmp_path / "out"),
        "--extra",
        str(stuff),
    ]
    assert convert(args) == 2
    assert "map it with --stuff-category volcanic=material" in capsys.readouterr().err
    assert convert([*args, "--stuff-category", "volcanic=material", "--size", "8"]) == 0
    assert "lava" in load_probe_set(tmp_path / "out").label_names
