"""`convert pascal-context` and `convert pascal-part` on tiny datasets the test writes in their own formats
(Pascal-Context's per-image `LabelMap` .mat or grey PNG with labels.txt / 59_labels.txt; Pascal-Part's
`anno` struct with object and part masks): masks, label numbers, categories and coverage against hand-made
values; the converted set dissects; a malformed file is named and nothing is written."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dissection.broden import load_probe_set
from dissection.cli import main
from dissection.convert.pascal import VOC_CLASSES
from dissection.networks import ToyNet
from dissection.pipeline import dissect

CONTEXT_LABELS = {1: "accordion", 2: "aeroplane", 3: "air conditioner", 4: "sky", 5: "grass"}
CONTEXT_59 = {1: "aeroplane", 2: "grass", 3: "sky"}

# Image a: sky on the top half, an aeroplane at rows 4-5, cols 2-5, grass on rows 6-7; image b: grass left
# half, an accordion (not among the 59) at rows 0-1 of the right half.
MAP_A = np.zeros((8, 8), np.uint16)
MAP_A[:4] = 4
MAP_A[4:6, 2:6] = 2
MAP_A[6:] = 5
MAP_B = np.zeros((8, 8), np.uint16)
MAP_B[:, :4] = 5
MAP_B[:2, 4:] = 1


def picture(folder: Path, stem: str, size: tuple[int, int] = (8, 8)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(folder / f"{stem}.png")


@pytest.fixture
def context(tmp_path: Path) -> Path:
    src = tmp_path / "context"
    (src / "trainval").mkdir(parents=True)
    (src / "labels.txt").write_text("".join(f"{n}: {name}\n" for n, name in CONTEXT_LABELS.items()))
    (src / "59_labels.txt").write_text("".join(f"{n}: {name}\n" for n, name in CONTEXT_59.items()))
    scipy.io.savemat(src / "trainval" / "2008_000001.mat", {"LabelMap": MAP_A})
    Image.fromarray(MAP_B.astype(np.uint8), "L").save(src / "trainval" / "2008_000002.png")
    picture(src / "JPEGImages", "2008_000001")
    picture(src / "JPEGImages", "2008_000002")
    return src


def convert(fmt: str, src: Path, out: Path, *extra: str) -> int:
    args = ["convert", fmt, str(src), str(out), "--size", "8", "--mask-size", "4", "--image-format", "png"]
    return main([*args, "--quiet", *extra])


def decoded(probe_root: Path, name: str) -> np.ndarray:
    rgb = np.asarray(Image.open(probe_root / "images" / name).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_pascal_context_maps_every_class_to_object_with_its_number(context: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert convert("pascal-context", context, out) == 0
    probe = load_probe_set(out)
    assert probe.label_names[1:] == tuple(CONTEXT_LABELS.values())
    assert probe.categories == ("object",)
    index = rows(out / "index.csv")
    assert [row["image"] for row in index] == [
        "pascal-context/2008_000001.png",
        "pascal-context/2008_000002.png",
    ]
    # Nearest neighbour at half size: mask pixel (i, j) reads source pixel (2i + 1, 2j + 1).
    assert decoded(out, index[0]["object"]).tolist() == MAP_A[1::2, 1::2].tolist()
    assert decoded(out, index[1]["object"]).tolist() == MAP_B[1::2, 1::2].tolist()
    coverage = {
        row["name"]: (int(row["frequency"]), float(row["coverage"])) for row in rows(out / "c_object.csv")
    }
    small = [MAP_A[1::2, 1::2], MAP_B[1::2, 1::2]]
    for number, name in CONTEXT_LABELS.items():
        images = [m for m in small if (m == number).any()]
        expected = (len(images), round(sum(float((m == number).mean()) for m in images), 6))
        assert coverage[name] == expected


def test_pascal_context_59_keeps_only_those_classes(context: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert convert("pascal-context", context, out, "--classes", "59") == 0
    probe = load_probe_set(out)
    assert probe.label_names[1:] == ("aeroplane", "grass", "sky")
    index = rows(out / "index.csv")
    to_59 = np.array([0, 0, 1, 0, 3, 2])
    assert decoded(out, index[0]["object"]).tolist() == to_59[MAP_A[1::2, 1::2]].tolist()
    assert decoded(out, index[1]["object"]).tolist() == to_59[MAP_B[1::2, 1::2]].tolist()


def test_a_malformed_pascal_context_map_names_its_file(
    context: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scipy.io.savemat(context / "trainval" / "2008_000001.mat", {"Other": MAP_A})
    out = tmp_path / "out"
    assert convert("pascal-context", context, out) == 2
    assert "2008_000001.mat: lacks `LabelMap`" in capsys.readouterr().err
    bad = MAP_A.copy()
    bad[0, 0] = 9
    scipy.io.savemat(context / "trainval" / "2008_000001.mat", {"LabelMap": bad})
    assert convert("pascal-context", context, out) == 2
    assert "2008_000001.mat: class number 9 is not in" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def struct_array(records: list[dict[str, object]], fields: tuple[str, ...]) -> np.ndarray:
    """A 1 x n MATLAB struct array for savemat."""
    array = np.zeros((1, len(records)), dtype=[(name, "O") for name in fields])
    for i, record in enumerate(records):
        for name in fields:
            array[0, i][name] = record[name]
    return array


def part_mat(
    path: Path, imname: str, objects: list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]]
) -> None:
    records = [
        {
            "class": name,
            "class_ind": VOC_CLASSES.index(name) + 1 if name in VOC_CLASSES else 0,
            "mask": mask.astype(np.uint8),
            "parts": struct_array(
                [{"part_name": p, "mask": m.astype(np.uint8)} for p, m in parts], ("part_name", "mask")
            )
            if parts
            else np.zeros((0, 0)),
        }
        for name, mask, parts in objects
    ]
    anno = {"imname": imname, "objects": struct_array(records, ("class", "class_ind", "mask", "parts"))}
    scipy.io.savemat(path, {"anno": anno})


def box(rows_: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((8, 8), bool)
    mask[rows_, cols] = True
    return mask


# Image a: a person (left half) with a head (rows 0-1) and a dog (rows 4-7, cols 2-5, overlapping the
# person) with a head (rows 4-5, cols 4-5) and a tail; image b: one cat without parts.
PERSON, DOG, CAT = box(slice(None), slice(0, 4)), box(slice(4, 8), slice(2, 6)), box(slice(2, 6), slice(2, 6))
PERSON_HEAD, DOG_HEAD, DOG_TAIL = (
    box(slice(0, 2), slice(0, 4)),
    box(slice(4, 6), slice(4, 6)),
    box(slice(6, 8), slice(2, 4)),
)


@pytest.fixture
def parts(tmp_path: Path) -> Path:
    src = tmp_path / "parts"
    (src / "Annotations_Part").mkdir(parents=True)
    part_mat(
        src / "Annotations_Part" / "2008_000003.mat",
        "2008_000003",
        [("person", PERSON, [("head", PERSON_HEAD)]), ("dog", DOG, [("head", DOG_HEAD), ("tail", DOG_TAIL)])],
    )
    part_mat(src / "Annotations_Part" / "2008_000004.mat", "2008_000004", [("cat", CAT, [])])
    picture(src / "JPEGImages", "2008_000003")
    picture(src / "JPEGImages", "2008_000004")
    return src


def test_pascal_part_gives_objects_and_parts_with_stable_numbers(parts: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert convert("pascal-part", parts, out) == 0
    probe = load_probe_set(out)
    assert probe.label_names[1:] == (*VOC_CLASSES, "head", "tail")
    assert probe.categories == ("object", "part")
    number = {name: i for i, name in enumerate(probe.label_names)}
    for index, (objects, part_masks) in enumerate(
        [
            (
                [("person", PERSON), ("dog", DOG)],
                [("head", PERSON_HEAD), ("head", DOG_HEAD), ("tail", DOG_TAIL)],
            ),
            ([("cat", CAT)], []),
        ]
    ):
        numbers, onehot = probe.load_labels(index)
        got = {int(n): row.reshape(4, 4) for n, row in zip(numbers, onehot, strict=True)}
        want: dict[int, np.ndarray] = {}
        for name, mask in objects + part_masks:
            small = mask[1::2, 1::2].astype(np.uint8)
            want[number[name]] = want.get(number[name], np.zeros((4, 4), np.uint8)) | small
        assert {n: m.tolist() for n, m in got.items()} == {n: m.tolist() for n, m in want.items()}
    part_rows = {
        row["name"]: (int(row["frequency"]), float(row["coverage"])) for row in rows(out / "c_part.csv")
    }
    heads = (PERSON_HEAD | DOG_HEAD)[1::2, 1::2].mean()
    assert part_rows == {
        "head": (1, round(float(heads), 6)),
        "tail": (1, round(float(DOG_TAIL[1::2, 1::2].mean()), 6)),
    }
    result = dissect(out, tmp_path / "run", layers=["conv1"], model=ToyNet(), device="cpu", workers=0, topk=2)
    assert (result["conv1"] / "tally.csv").is_file()


def test_a_malformed_pascal_part_annotation_names_its_file(
    parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part_mat(parts / "Annotations_Part" / "2008_000004.mat", "2008_000004", [("unicorn", CAT, [])])
    out = tmp_path / "out"
    assert convert("pascal-part", parts, out) == 2
    assert "2008_000004.mat object 1: class 'unicorn' is not a Pascal VOC class" in capsys.readouterr().err
    part_mat(parts / "Annotations_Part" / "2008_000004.mat", "2008_000004", [("cat", np.zeros((5, 5)), [])])
    assert convert("pascal-part", parts, out) == 2
    assert "2008_000004.mat object 1: mask is 5x5, the image is 8x8" in capsys.readouterr().err
    (parts / "Annotations_Part" / "2008_000004.mat").write_text("not a mat file")
    assert convert("pascal-part", parts, out) == 2
    assert "2008_000004.mat: not a readable MATLAB .mat file" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()
