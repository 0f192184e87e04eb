"""`convert folder` and the shared Broden writer: hand-checked masks, numbers, categories and coverage;
resuming; refusing bad input without leaving anything in OUT; and the round trip synthetic Broden set →
folder format → `convert folder` → the same tally.csv."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dissection.broden import load_probe_set
from dissection.cli import main
from dissection.convert import writer as writer_module
from dissection.convert.folder import folder_images
from dissection.convert.writer import ConvertError, resize_nearest, stack_masks, write_probe_set
from dissection.networks import ToyNet
from dissection.synth import make_probe_set


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, header: list[str], body: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(body)


# Image a (8 x 8): sky (1) above row 4, grass (2) below; a car (3) in rows 2-5, cols 2-5 over both; its wheel
# (5, a part) in masks2/ at rows 4-5, cols 2-3. Image b/c (8 x 8, in a subfolder): all grass, scene beach (4).
A_FIRST = np.array(
    [[1] * 8] * 2 + [[1, 1, 3, 3, 3, 3, 1, 1]] * 2 + [[2, 2, 3, 3, 3, 3, 2, 2]] * 2 + [[2] * 8] * 2
)
A_SECOND = np.zeros((8, 8), np.int64)
A_SECOND[4:6, 2:4] = 5


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for sub in ("images/b", "masks/b", "masks2"):
        (src / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b/c.jpg"):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(src / "images" / name)
    Image.fromarray(A_FIRST.astype(np.uint8), "L").save(src / "masks" / "a.png")
    Image.fromarray(A_SECOND.astype(np.uint16)).save(src / "masks2" / "a.png")  # 16-bit grey
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 2  # R + 256·G = 2
    Image.fromarray(rgb).save(src / "masks" / "b" / "c.png")
    write_rows(
        src / "labels.csv",
        ["number", "name", "category", "synonyms"],
        [
            [1, "sky", "region", ""],
            [2, "grass", "material", "lawn;turf"],
            [3, "car", "object", "auto"],
            [4, "beach", "scene", ""],
            [5, "wheel", "part", ""],
            [6, "tree", "object", ""],
        ],
    )
    write_rows(src / "image_labels.csv", ["image", "label"], [["b/c.jpg", 4]])
    return src


def convert(args: list[str]) -> int:
    return main(["convert", *args, "--quiet"])


def test_folder_converts_with_hand_computed_masks_numbers_categories_and_coverage(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert convert(["folder", str(folder), str(out), "--size", "8", "--mask-size", "4"]) == 0
    probe = load_probe_set(out)
    assert probe.categories == ("object", "part", "material", "region", "scene")
    assert probe.image_size == (8, 8) and probe.mask_size == (4, 4)
    assert [image.image for image in probe.images] == ["folder/a.jpg", "folder/b/c.jpg"]
    assert probe.label_names[1:] == ("sky", "grass", "car", "beach", "wheel", "tree")
    cat = {name: probe.categories[probe.label_category[n]] for n, name in enumerate(probe.label_names) if n}
    assert cat == {
        "sky": "region",
        "grass": "material",
        "car": "object",
        "beach": "scene",
        "wheel": "part",
        "tree": "object",
    }

    # Nearest to 4 x 4 reads source rows and columns 1, 3, 5, 7.
    small = A_FIRST[1::2, 1::2]
    numbers, onehot = probe.load_labels(0)
    assert numbers.tolist() == [1, 2, 3, 5]
    for number, row in zip(numbers, onehot, strict=True):
        expected = (small == number) | (A_SECOND[1::2, 1::2] == number)
        assert row.reshape(4, 4).tolist() == expected.tolist(), number
    numbers, onehot = probe.load_labels(1)
    assert numbers.tolist() == [2, 4] and onehot.all()

    index = rows(out / "index.csv")
    assert index[0]["object"] == "folder/a_object.png" and index[0]["part"] == "folder/a_part.png"
    assert index[0]["region"] == "folder/a_region.png" and index[0]["scene"] == ""
    assert index[1]["material"] == "folder/b/c_material.png" and index[1]["scene"] == "4"
    labels = {row["name"]: row for row in rows(out / "label.csv")}
    assert labels["grass"]["syns"] == "lawn;turf"
    assert labels["grass"]["category"] == "material(2)" and labels["grass"]["frequency"] == "2"
    # grass: 6 of 16 mask pixels in a, all 16 in c.
    assert float(labels["grass"]["coverage"]) == pytest.approx(6 / 16 + 1)
    assert labels["tree"]["category"] == "object(0)" and labels["tree"]["frequency"] == "0"
    objects = {row["name"]: row for row in rows(out / "c_object.csv")}
    assert objects["car"]["frequency"] == "1" and float(objects["car"]["coverage"]) == pytest.approx(4 / 16)
    assert objects["tree"]["coverage"] == "0.000000"
    assert rows(out / "c_scene.csv") == [
        {"code": "1", "number": "4", "name": "beach", "frequency": "1", "coverage": "1.000000"}
    ]
    assert [(r["name"], r["count"], r["frequency"]) for r in rows(out / "category.csv")] == [
        ("object", "2", "1"),
        ("part", "1", "1"),
        ("material", "1", "2"),
        ("region", "1", "1"),
        ("scene", "1", "1"),
    ]
    assert not (tmp_path / ".out.partial").exists()
    assert json.loads((out / "convert.json").read_text())["source"] == "folder"


def test_resize_nearest_and_stacking_by_hand() -> None:
    layer = np.arange(36).reshape(6, 6)
    assert resize_nearest(layer, (3, 2)).tolist() == [[7, 10], [19, 22], [31, 34]]
    person = np.zeros((3, 3), bool)
    person[:2, :2] = True
    horse = np.zeros((3, 3), bool)
    horse[1:, 1:] = True
    other_person = np.zeros((3, 3), bool)
    other_person[0, :] = True
    layers = stack_masks([(1, person), (2, horse), (1, other_person)], (3, 3))
    assert [layer.tolist() for layer in layers] == [
        [[1, 1, 1], [1, 1, 2], [0, 2, 2]],
        [[0, 0, 0], [0, 2, 0], [0, 0, 0]],
    ]


def test_a_rerun_resumes_skipping_finished_images(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    mask = folder / "masks" / "b" / "c.png"
    good = mask.read_bytes()
    Image.fromarray(np.full((8, 8), 9, np.uint8), "L").save(mask)  # a number labels.csv lacks
    labels, categories, images = folder_images(folder)
    with pytest.raises(ConvertError, match=r"masks/b/c.png: label number 9 is not in labels.csv"):
        write_probe_set(
            out,
            images,
            source="folder",
            labels=labels,
            categories=categories,
            image_size=(8, 8),
            mask_size=(4, 4),
            options={"format": "folder", "src": str(folder.resolve()), "void": None},
            progress=False,
        )
    partial = tmp_path / ".out.partial"
    assert not out.exists() and (partial / "progress.jsonl").is_file()
    assert [json.loads(line)["stem"] for line in (partial / "progress.jsonl").read_text().splitlines()] == [
        "a"
    ]
    with (partial / "progress.jsonl").open("a") as handle:
        handle.write('{"stem": "b/c", "ima')  # an append torn by a crash

    mask.write_bytes(good)
    loaded: list[str] = []
    original = writer_module.BrodenWriter.add

    def counting_add(
        self: writer_module.BrodenWriter, image: writer_module.SourceImage, annotation: object
    ) -> None:
        loaded.append(image.stem)
        original(self, image, annotation)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module.BrodenWriter, "add", counting_add)
    assert convert(["folder", str(folder), str(out), "--size", "8", "--mask-size", "4"]) == 0
    assert loaded == ["b/c"]
    assert not partial.exists() and len(load_probe_set(out)) == 2

    loaded.clear()
    assert convert(["folder", str(folder), str(out), "--size", "8", "--mask-size", "4"]) == 0
    assert loaded == []  # finished, same options: nothing to do


def test_other_options_on_a_partial_or_finished_set_are_refused(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert convert(["folder", str(folder), str(out), "--size", "8"]) == 0
    assert convert(["folder", str(folder), str(out), "--size", "16"]) == 2
    assert "holds a conversion with other options or labels" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert convert(["folder", str(folder), str(tmp_path / "other")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            "small_mask",
            r"masks/a.png: mask is 4x4 but images/a.png is 8x8; a mask must have its image's size",
        ),
        ("unknown_number", r"masks/a.png: label number 9 is not in labels.csv"),
        ("no_mask", r"images/a.png: has no mask \(expected masks/a.png\) and no row in image_labels.csv"),
        ("bad_label_row", r"labels.csv row 3: number 'x' is not an integer in 1..65535"),
        ("bad_image_row", r"image_labels.csv row 2: image 'nope.jpg' is not under images/"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: str, message: str
) -> None:
    if breakage == "small_mask":
        Image.fromarray(np.ones((4, 4), np.uint8), "L").save(folder / "masks" / "a.png")
    elif breakage == "unknown_number":
        Image.fromarray(np.full((8, 8), 9, np.uint8), "L").save(folder / "masks" / "a.png")
    elif breakage == "no_mask":
        (folder / "masks" / "a.png").unlink()
        (folder / "masks2" / "a.png").unlink()
    elif breakage == "bad_label_row":
        text = (folder / "labels.csv").read_text().replace("2,grass", "x,grass")
        (folder / "labels.csv").write_text(text)
    else:
        write_rows(folder / "image_labels.csv", ["image", "label"], [["nope.jpg", 4]])
    out = tmp_path / "out"
    assert convert(["folder", str(folder), str(out), "--size", "8", "--mask-size", "4"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def export_folder(probe_root: Path, dest: Path) -> None:
    """A Broden set in the folder format: the images, each label layer upsampled (nearest, 2 x 2 blocks) to
    its image's size in masks/, masks2/, …, image-level labels in image_labels.csv."""
    probe = load_probe_set(probe_root)
    scale = probe.image_size[0] // probe.mask_size[0]
    scalars = []
    for i, record in enumerate(probe.images):
        name = Path(record.image)
        (dest / "images" / name.parent).mkdir(parents=True, exist_ok=True)
        shutil.copy(probe.path(record.image), dest / "images" / name)
        for k, layer_name in enumerate(record.layers, start=1):
            folder = dest / ("masks" if k == 1 else f"masks{k}") / name.parent
            folder.mkdir(parents=True, exist_ok=True)
            layer = probe.load_layer(i, layer_name).repeat(scale, 0).repeat(scale, 1)
            Image.fromarray(layer.astype(np.uint16)).save(folder / name.with_suffix(".png").name)
        scalars += [[record.image, number] for number in record.scalars]
    write_rows(dest / "image_labels.csv", ["image", "label"], scalars)
    write_rows(
        dest / "labels.csv",
        ["number", "name", "category"],
        [
            [n, name, probe.categories[probe.label_category[n]]]
            for n, name in enumerate(probe.label_names)
            if n and probe.label_category[n] >= 0
        ],
    )


def test_round_trip_through_the_folder_format_gives_the_same_tally(tmp_path: Path) -> None:
    synth = make_probe_set(tmp_path / "synth", images=12, size=32, seed=1)
    export_folder(synth, tmp_path / "folder")
    converted = tmp_path / "converted"
    args = ["folder", str(tmp_path / "folder"), str(converted), "--size", "32", "--mask-size", "16"]
    assert convert([*args, "--image-format", "png"]) == 0
    torch.manual_seed(0)
    torch.save(ToyNet().state_dict(), tmp_path / "toy.pt")
    tallies = []
    for root in (synth, converted):
        out = tmp_path / f"dissect-{root.name}"
        run = ["run", "--probe-set", str(root), "--model", "toy", "--weights", str(tmp_path / "toy.pt")]
        assert main([*run, "--layer", "conv3", "--out", str(out), "--workers", "0", "--topk", "2"]) == 0
        tallies.append((out / "conv3" / "tally.csv").read_text())
    assert tallies[0] == tallies[1]
    assert len(tallies[0].splitlines()) == 129
    synth_labels = {r["name"]: r for r in rows(synth / "label.csv")}
    for row in rows(converted / "label.csv"):
        assert (row["category"], row["frequency"], row["coverage"]) == (
            synth_labels[row["name"]]["category"],
            synth_labels[row["name"]]["frequency"],
            synth_labels[row["name"]]["coverage"],
        )


@pytest.mark.parametrize("command", ["convert", "segment"])
def test_help_imports_neither_torch_nor_pycocotools(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dissection", command, "--help"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"usage: python -m dissection {command}" in done.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "import time:" in line
    }
    assert not {name for name in imported if name.split(".")[0] in {"torch", "torchvision", "pycocotools"}}
