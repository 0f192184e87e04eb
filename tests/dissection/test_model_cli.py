"""End to end through `python -m dissection`: the toy model's sanity check, outputs, and bad inputs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dissection.cli import main
from dissection.networks import ToyNet, load_model
from dissection.pipeline import dissect
from dissection.synth import make_probe_set


def _interpretable(out: Path) -> int:
    return json.loads((out / "result.json").read_text())["summary"]["interpretable"]


def test_trained_toy_has_clearly_more_interpretable_units_than_random(probe_set_dir, toy_weights, tmp_path):
    trained = dissect(
        probe_set_dir,
        tmp_path / "trained",
        layers=["conv4"],
        topk=1,
        workers=0,
        model=load_model("toy", weights=toy_weights),
    )["conv4"]
    torch.manual_seed(0)
    random = dissect(
        probe_set_dir,
        tmp_path / "random",
        layers=["conv4"],
        topk=1,
        workers=0,
        model=ToyNet(num_classes=5).eval(),
    )["conv4"]
    n_trained, n_random = _interpretable(trained), _interpretable(random)
    assert n_trained >= 40 and n_trained >= 3 * max(n_random, 1), (n_trained, n_random)


def test_cli_run_writes_every_output_and_report_rebuilds(probe_set_dir, toy_weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--probe-set",
            str(probe_set_dir),
            "--model",
            "toy",
            "--weights",
            str(toy_weights),
            "--layer",
            "conv3",
            "--layer",
            "conv4",
            "--out",
            str(out),
            "--topk",
            "4",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--batch-size",
            "48",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "conv4:" in printed and "units covering" in printed
    # One bar per phase, each named by its place among all five, each with one total from start to end.
    totals: dict[str, set[str]] = {}
    for name, total in re.findall(r"(\d/\d [a-z]+(?: conv\d)?): .*?\| *\d+/(\d+)", captured.err):
        totals.setdefault(name, set()).add(total)
    assert list(totals) == [
        "1/5 scan",
        "2/5 tally conv3",
        "3/5 report conv3",
        "4/5 tally conv4",
        "5/5 report conv4",
    ]
    assert all(len(seen) == 1 for seen in totals.values()), totals
    assert sorted(p.name for p in out.iterdir()) == ["conv3", "conv4"]  # no work folder left behind
    layer = out / "conv4"
    document = json.loads((layer / "result.json").read_text())
    assert document["num_units"] == 128 and len(document["units"]) == 128
    unit = document["units"][5]
    assert unit["unit"] == 6 and unit["channel"] == 5
    assert len(unit["images"]) == 4 and len(unit["concepts"]) == 5
    assert not any((layer / image["tile"]).exists() for image in unit["images"])  # made on demand
    assert (probe_set_dir / "images" / unit["images"][0]["image"]).is_file()
    assert (layer / unit["strip"]).is_file()
    activations = [image["activation"] for image in unit["images"]]
    assert activations == sorted(activations, reverse=True)
    tally = (layer / "tally.csv").read_text().splitlines()
    assert tally[0].startswith("unit,category,label,score,color-label,color-truth,color-activation")
    scores = [float(line.split(",")[3]) for line in tally[1:]]
    assert len(scores) == 128 and scores == sorted(scores, reverse=True)
    html = (layer / "report.html").read_text()
    summary = document["summary"]
    headline = (
        f"{summary['interpretable']}/128 units covering {summary['unique_concepts']} "
        "concepts with IoU &gt; 0.04"
    )
    assert headline in html and "<svg" in html and unit["strip"] in html
    (layer / "report.html").unlink()
    assert main(["report", str(layer)]) == 0
    assert (layer / "report.html").read_text() == html


def test_tile_highlights_the_region_and_dims_the_rest(tmp_path):
    from dissection.render import highlight

    images = np.full((1, 8, 8, 3), 200, np.uint8)
    maps = np.zeros((1, 2, 2), np.float32)
    maps[0, 0, 0] = 10.0
    tile = highlight(images, maps, threshold=5.0)[0]
    assert (tile[0, 0] == 200).all() and (tile[7, 7] == 40).all()


def test_cli_synth_and_train_toy(tmp_path):
    assert main(["synth", str(tmp_path / "set"), "--images", "8", "--size", "32", "--seed", "2"]) == 0
    assert (tmp_path / "set" / "boxes.csv").is_file()
    train = ["train-toy", str(tmp_path / "toy.pt"), "--probe-set", str(tmp_path / "set"), "--epochs", "1"]
    assert main(train) == 0
    assert load_model("toy", weights=tmp_path / "toy.pt").fc.out_features == 5


@pytest.fixture
def small_set(tmp_path) -> Path:
    return make_probe_set(tmp_path / "set", images=6, size=32, seed=1)


def _fails(args: list[str], capsys, *fragments: str) -> None:
    assert main(args) == 2
    message = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in message, message


def _run_args(probe_set: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--probe-set",
        str(probe_set),
        "--out",
        str(out),
        "--layer",
        "conv2",
        "--topk",
        "2",
        "--workers",
        "0",
        *extra,
    ]


def _assert_nothing_complete(out: Path) -> None:
    assert not list(out.rglob("result.json")) and not list(out.rglob("report.html"))
    assert not (out / "conv2").exists()
    if out.exists():
        assert not list(out.glob(".*")), "a work or partial folder was left behind"


@pytest.mark.parametrize("missing", ["index.csv", "label.csv", "category.csv"])
def test_missing_csv_is_named(small_set, tmp_path, capsys, missing):
    (small_set / missing).unlink()
    args = _run_args(small_set, tmp_path / "out", "--model", "toy")
    _fails(args, capsys, str(small_set / missing), "missing")
    _assert_nothing_complete(tmp_path / "out")


def test_label_png_of_the_wrong_size(small_set, tmp_path, capsys):
    path = small_set / "images" / "synth" / "000004_color.png"
    Image.new("RGB", (17, 16)).save(path)
    _fails(
        _run_args(small_set, tmp_path / "out", "--model", "toy"),
        capsys,
        str(path),
        "index.csv row 6",
        "16x17",
        "16x16",
    )
    _assert_nothing_complete(tmp_path / "out")


def test_corrupt_image(small_set, tmp_path, capsys):
    path = small_set / "images" / "synth" / "000002.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _fails(
        _run_args(small_set, tmp_path / "out", "--model", "toy"),
        capsys,
        str(path),
        "index.csv row 4",
        "cannot decode",
    )
    _assert_nothing_complete(tmp_path / "out")


def test_label_number_absent_from_label_csv(small_set, tmp_path, capsys):
    path = small_set / "images" / "synth" / "000001_object.png"
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 999 % 256, 999 // 256
    Image.fromarray(rgb).save(path)
    _fails(
        _run_args(small_set, tmp_path / "out", "--model", "toy"),
        capsys,
        str(path),
        "index.csv row 3",
        "label number 999 is not in label.csv",
    )
    _assert_nothing_complete(tmp_path / "out")
    index = small_set / "index.csv"
    lines = index.read_text().splitlines()
    fields = lines[2].split(",")
    fields[-1] = "77"
    lines[2] = ",".join(fields)
    index.write_text("\n".join(lines) + "\n")
    _fails(
        _run_args(small_set, tmp_path / "out", "--model", "toy"),
        capsys,
        str(index),
        "row 3",
        "column 'texture' names label 77",
    )


def test_activation_rows_must_match_index(small_set, tmp_path, capsys):
    np.save(tmp_path / "acts.npy", np.zeros((5, 3, 2, 2), np.float32))
    _fails(
        [
            "run",
            "--probe-set",
            str(small_set),
            "--out",
            str(tmp_path / "out"),
            "--layer",
            "conv2",
            "--activations",
            str(tmp_path / "acts.npy"),
        ],
        capsys,
        str(tmp_path / "acts.npy"),
        "5 rows",
        "lists 6 images",
    )
    _assert_nothing_complete(tmp_path / "out")


def test_precomputed_activations_run(small_set, tmp_path):
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(6, 3, 4, 4)).astype(np.float32))
    assert (
        main(
            [
                "run",
                "--probe-set",
                str(small_set),
                "--out",
                str(tmp_path / "out"),
                "--layer",
                "mine",
                "--activations",
                str(tmp_path / "acts.npy"),
                "--topk",
                "2",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "out" / "mine" / "result.json").read_text())["num_units"] == 3


def test_missing_and_misfit_weights(small_set, tmp_path, capsys):
    _fails(
        _run_args(small_set, tmp_path / "out", "--model", "toy", "--weights", str(tmp_path / "nope.pt")),
        capsys,
        str(tmp_path / "nope.pt"),
        "does not exist",
    )
    torch.save(ToyNet(width=8).state_dict(), tmp_path / "narrow.pt")
    narrow = str(tmp_path / "narrow.pt")
    _fails(
        _run_args(small_set, tmp_path / "out", "--model", "resnet18", "--weights", narrow),
        capsys,
        narrow,
        "do not fit",
    )
    _assert_nothing_complete(tmp_path / "out")


def test_unknown_layer_and_non_spatial_layer(small_set, tmp_path, capsys):
    args = _run_args(small_set, tmp_path / "out", "--model", "toy")
    args[args.index("conv2")] = "conv9"
    _fails(args, capsys, "unknown layer 'conv9'", "conv1", "conv4")
    args[args.index("conv9")] = "fc"
    _fails(args, capsys, "layer 'fc' outputs shape", "N x C x H x W")
    assert not list((tmp_path / "out").rglob("*.json"))


def test_failed_rerun_keeps_the_previous_complete_output(small_set, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_run_args(small_set, out, "--model", "toy")) == 0
    before = (out / "conv2" / "result.json").read_bytes()
    shutil.copy(small_set / "images" / "synth" / "000000.png", small_set / "images" / "synth" / "000001.png")
    (small_set / "images" / "synth" / "000003_color.png").write_bytes(b"garbage")
    assert main(_run_args(small_set, out, "--model", "toy")) == 2
    assert (out / "conv2" / "result.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["conv2"]
