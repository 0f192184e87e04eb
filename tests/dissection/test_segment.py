"""`segment`: a folder of images labelled by a tiny TorchScript segmenter (a 1x1 convolution whose classes
follow the pixel colours), written as a Broden set with hand-computed masks at one or two confidence
thresholds; the in-memory label source gives the tally exactly what the PNGs give; a segmenter whose class
count differs from the classes file is refused and nothing is written."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dissection.broden import load_probe_set
from dissection.cli import main
from dissection.convert.segment import Segmenter, SegmenterLabels, read_classes
from dissection.data import _LabelArrays
from dissection.errors import ModelError
from dissection.networks import ToyNet

# The TorchScript segmenter is the test's subject; torch 2.14 marks TorchScript deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

# Colours of 2 x 2 blocks (pixels / 255) and the class each gets. Logits: background 5, class k 10 x channel
# k - 1: red → sky (softmax 0.99), dim red (0.55) → sky at 0.62, green → grass, blue → car, grey → background.
COLOURS = {
    "red": ((255, 0, 0), 1, 0.99),
    "dim": ((140, 0, 0), 1, 0.62),
    "green": ((0, 255, 0), 2, 0.99),
    "blue": ((0, 0, 255), 3, 0.99),
    "grey": ((100, 100, 100), 0, 0.9),
}
LAYOUTS = [
    [["red", "red", "grey", "green"], ["dim", "blue", "blue", "green"], ["grey"] * 4, ["green"] * 4],
    [["blue"] * 4, ["dim"] * 4, ["red", "grey", "grey", "red"], ["green", "green", "blue", "blue"]],
]


class ColourSegmenter(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.bias[0] = 5.0
            for k in range(1, min(classes, 4)):
                self.conv.weight[k, k - 1] = 10.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def write_classes(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "category"])
        writer.writerows(rows)
    return path


CLASSES = [("background", ""), ("sky", "region"), ("grass", "material"), ("car", "object")]


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """tmp/images/{a,b}.png (8 x 8, 2 x 2 blocks), tmp/segmenter.pt, tmp/classes.csv."""
    (tmp_path / "images" / "sub").mkdir(parents=True)
    for name, layout in zip(("a.png", "sub/b.png"), LAYOUTS, strict=True):
        blocks = np.array([[COLOURS[c][0] for c in row] for row in layout], np.uint8)
        Image.fromarray(blocks.repeat(2, 0).repeat(2, 1)).save(tmp_path / "images" / name)
    torch.jit.script(ColourSegmenter()).save(str(tmp_path / "segmenter.pt"))
    write_classes(tmp_path / "classes.csv", CLASSES)
    return tmp_path


def expected(layout: list[list[str]], threshold: float, numbers: dict[int, int]) -> np.ndarray:
    """The 4 x 4 mask (one pixel per block) by hand: a block's class where its probability reaches t."""
    return np.array(
        [[numbers.get(COLOURS[c][1], 0) if COLOURS[c][2] >= threshold else 0 for c in row] for row in layout]
    )


def segment(setup: Path, out: Path, *extra: str) -> int:
    args = ["segment", str(setup / "images"), str(out), "--segmenter", str(setup / "segmenter.pt")]
    args += [
        "--classes",
        str(setup / "classes.csv"),
        "--size",
        "8",
        "--mask-size",
        "4",
        "--image-format",
        "png",
    ]
    return main([*args, "--mean", "0", "0", "0", "--std", "1", "1", "1", "--quiet", *extra])


def test_segmenter_labels_a_folder_with_hand_computed_masks(setup: Path) -> None:
    out = setup / "out"
    assert segment(setup, out) == 0
    probe = load_probe_set(out)
    assert probe.label_names[1:] == ("sky", "grass", "car")
    assert probe.categories == ("object", "material", "region")
    assert [probe.categories[c] for c in probe.label_category[1:]] == ["region", "material", "object"]
    assert [image.image for image in probe.images] == ["segment/a.png", "segment/sub/b.png"]
    for index, layout in enumerate(LAYOUTS):
        numbers, onehot = probe.load_labels(index)
        mask = np.zeros(16, np.int64)
        for number, row in zip(numbers, onehot, strict=True):
            mask[row > 0] = number
        assert mask.reshape(4, 4).tolist() == expected(layout, 0.0, {1: 1, 2: 2, 3: 3}).tolist()


def test_two_thresholds_give_a_label_per_class_and_threshold(setup: Path) -> None:
    out = setup / "out"
    assert segment(setup, out, "--threshold", "0", "--threshold", "0.9") == 0
    probe = load_probe_set(out)
    assert probe.label_names[1:] == ("sky@0", "sky@0.9", "grass@0", "grass@0.9", "car@0", "car@0.9")
    for index, layout in enumerate(LAYOUTS):
        numbers, onehot = probe.load_labels(index)
        for threshold, offset in ((0.0, 0), (0.9, 1)):
            by_class = {k: 2 * (k - 1) + 1 + offset for k in (1, 2, 3)}
            mask = np.zeros(16, np.int64)
            for number, row in zip(numbers, onehot, strict=True):
                if number in by_class.values():
                    mask[row > 0] = number
            assert mask.reshape(4, 4).tolist() == expected(layout, threshold, by_class).tolist()


def test_the_in_memory_label_source_gives_the_tally_what_the_pngs_give(setup: Path) -> None:
    out = setup / "out"
    assert segment(setup, out, "--threshold", "0", "--threshold", "0.9") == 0
    probe = load_probe_set(out)
    segmenter = Segmenter(
        torch.jit.load(str(setup / "segmenter.pt")),
        read_classes(setup / "classes.csv"),
        mask_size=(4, 4),
        thresholds=(0.0, 0.9),
        mean=(0, 0, 0),
        std=(1, 1, 1),
        device="cpu",
    )
    labels = SegmenterLabels(segmenter)
    relabelled = labels.relabel(probe)
    assert relabelled.label_names == probe.label_names
    assert relabelled.label_category.tolist() == probe.label_category.tolist()
    from_pngs = _LabelArrays(probe, [0, 1])
    batches = list(labels.stream(probe, [0, 1], batch_size=2))
    assert len(batches) == 1
    for position, item in enumerate(batches[0]):
        index, numbers, truth, combos, pixel_combo = from_pngs[position]
        assert item.index == index
        assert item.numbers.tolist() == numbers.tolist() and item.truth.tolist() == truth.tolist()
        assert item.combos.numpy().tolist() == combos.tolist()
        assert item.pixel_combo.numpy().tolist() == pixel_combo.tolist()


def test_a_segmenter_with_the_wrong_number_of_classes_is_refused_and_nothing_is_written(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_classes(setup / "classes.csv", CLASSES[:3])
    out = setup / "out"
    assert segment(setup, out) == 2
    assert "outputs 4 classes but the classes file lists 3" in capsys.readouterr().err
    assert not out.exists() and not (setup / ".out.partial").exists()
    with pytest.raises(ModelError, match=r"segmenter\.pt outputs 4 classes but the classes file lists 3"):
        Segmenter(
            torch.jit.load(str(setup / "segmenter.pt")),
            read_classes(setup / "classes.csv"),
            mask_size=(4, 4),
            device="cpu",
            where=str(setup / "segmenter.pt"),
        ).layers(torch.zeros(1, 3, 8, 8))


def test_a_segmenter_that_is_not_one_is_refused(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.jit.script(nn.Flatten()).save(str(setup / "segmenter.pt"))
    assert segment(setup, setup / "out") == 2
    assert "outputs (2, 192); a segmenter must output N x classes x h x w" in capsys.readouterr().err


def test_dissecting_an_image_folder_with_the_segmenter_in_memory_gives_the_tally_of_the_written_set(
    setup: Path,
) -> None:
    """`run --images DIR --segmenter …` (labels in memory, no PNG) against `segment` then `run --probe-set`:
    the same tally.csv, row for row."""
    torch.save(ToyNet().state_dict(), setup / "toy.pt")
    assert segment(setup, setup / "probe", "--threshold", "0", "--threshold", "0.9") == 0
    common = ["--model", "toy", "--weights", str(setup / "toy.pt"), "--layer", "conv1", "--device", "cpu"]
    common += ["--workers", "0", "--topk", "2", "--batch-size", "1"]
    assert main(["run", "--probe-set", str(setup / "probe"), "--out", str(setup / "written"), *common]) == 0
    in_memory = ["--images", str(setup / "images"), "--segmenter", str(setup / "segmenter.pt")]
    in_memory += ["--classes", str(setup / "classes.csv"), "--size", "8", "--mask-size", "4"]
    in_memory += ["--segmenter-threshold", "0", "--segmenter-threshold", "0.9"]
    in_memory += ["--segmenter-mean", "0", "0", "0", "--segmenter-std", "1", "1", "1"]
    assert main(["run", *in_memory, "--out", str(setup / "memory"), *common]) == 0
    written = (setup / "written" / "conv1" / "tally.csv").read_text()
    assert written.count("\n") > 1
    assert (setup / "memory" / "conv1" / "tally.csv").read_text() == written
    assert not list((setup / "memory").rglob("*_region.png"))


def test_images_without_a_segmenter_are_refused(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "--images", str(setup / "images"), "--model", "toy", "--layer", "conv1"]
    assert main([*args, "--out", str(setup / "o")]) == 2
    assert "--images needs --segmenter" in capsys.readouterr().err


def test_an_image_named_like_another_images_mask_is_refused(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Broden image folder given as plain images: `a_object.png` would be image a's object mask."""
    Image.open(setup / "images" / "a.png").save(setup / "images" / "a_object.png")
    assert segment(setup, setup / "out") == 2
    assert "its name 'a_object' is the name of image 'a''s object mask" in capsys.readouterr().err
    assert not (setup / "out").exists() and not (setup / ".out.partial").exists()
