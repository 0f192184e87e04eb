"""`python -m dissection cam` and `localize` on the toy model trained on the shared synthetic probe set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dissection.cam.heads import detect_gap_head, head_parameters
from dissection.cam.images import load_image, preprocess
from dissection.cam.maps import class_activation_maps
from dissection.cli import main
from dissection.networks import load_model


def _first_image(probe_set_dir: Path) -> Path:
    return sorted((probe_set_dir / "images" / "synth").glob("0000[0-9][0-9].png"))[0]


def test_cam_writes_an_overlay_and_raw_maps_that_add_up_to_the_logits(
    probe_set_dir: Path, toy_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _first_image(probe_set_dir)
    out, raw = tmp_path / "cam.png", tmp_path / "cam.npz"
    args = ["cam", "--model", "toy", "--weights", str(toy_weights), "--image", str(image), "--topk", "3"]
    assert main([*args, "--out", str(out), "--raw", str(raw)]) == 0
    with Image.open(out) as png:
        assert png.width > 3 * 224 and png.height == 224  # three panels, enlarged for a readable caption
    saved = np.load(raw)
    assert saved["maps"].shape == (3, 16, 16) and saved["logits"].shape == (5,)
    assert saved["classes"].tolist() == np.argsort(-saved["logits"])[:3].tolist()
    model = load_model("toy", weights=toy_weights)
    images = preprocess([load_image(image)], None)
    expected = class_activation_maps(model, images, topk=3)
    assert np.allclose(saved["maps"], expected.maps[0].numpy(), rtol=1e-5, atol=1e-5)
    _, bias = head_parameters(model, detect_gap_head(model, images))
    logits = torch.from_numpy(saved["logits"])
    classes = torch.from_numpy(saved["classes"])
    means = torch.from_numpy(saved["maps"]).mean(dim=(1, 2))
    assert torch.allclose(means + bias[classes], logits[classes], atol=1e-4)
    printed = capsys.readouterr().out
    classes_txt = (probe_set_dir / "classes.txt").read_text().split()
    assert f"  {classes_txt[int(classes[0])]} " in printed and "unit " in printed


def test_cam_by_class_name_with_dissection_labels(
    probe_set_dir: Path, toy_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tmp_path / "result.json"
    units = [
        {
            "unit": k + 1,
            "channel": k,
            "label": f"concept-{k}",
            "category": "object",
            "iou": 0.1,
            "interpretable": True,
        }
        for k in range(128)
    ]
    result.write_text(json.dumps({"schema": 1, "layer": "conv4", "num_units": 128, "units": units}))
    out = tmp_path / "tree.png"
    image = _first_image(probe_set_dir)
    code = main(
        [
            "cam",
            "--model",
            "toy",
            "--weights",
            str(toy_weights),
            "--image",
            str(image),
            "--class",
            "tree",
            "--out",
            str(out),
            "--dissection",
            str(result),
            "--units",
            "2",
        ]
    )
    assert code == 0 and out.is_file()
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  tree "))
    assert line.count("concept-") == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--class", "5"], "class index 5 is out of range: the model has 5 classes"),
        (["--class", "zebra"], "--class 'zebra' is neither an index nor one of the class names"),
        (["--layer", "conv3"], "--layer is for --method gradcam"),
    ],
)
def test_cam_bad_requests_fail_clearly_and_write_nothing(
    probe_set_dir: Path,
    toy_weights: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "cam.png"
    image = _first_image(probe_set_dir)
    code = main(
        [
            "cam",
            "--model",
            "toy",
            "--weights",
            str(toy_weights),
            "--image",
            str(image),
            "--out",
            str(out),
            "--raw",
            str(tmp_path / "cam.npz"),
            *extra,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cam_unreadable_image_and_headless_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out.png"
    assert main(["cam", "--model", "toy", "--image", str(broken), "--out", str(out)]) == 2
    assert f"cannot read image {broken}" in capsys.readouterr().err
    picture = tmp_path / "picture.png"
    Image.new("RGB", (112, 112), (90, 40, 200)).save(picture)
    alexnet = ["cam", "--model", "alexnet", "--size", "112", "--image", str(picture), "--out", str(out)]
    assert main(alexnet) == 2
    assert "has no global-average-pooling + linear head" in capsys.readouterr().err
    assert not out.exists()
    assert main([*alexnet, "--method", "gradcam"]) == 0
    assert out.is_file()


def test_localize_cli_beats_the_centred_box_on_the_synthetic_set(
    probe_set_dir: Path, toy_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "localization"
    assert (
        main(
            [
                "localize",
                "--probe-set",
                str(probe_set_dir),
                "--model",
                "toy",
                "--weights",
                str(toy_weights),
                "--out",
                str(out),
                "--gallery",
                "4",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == [
        "images",
        "classification_top1",
        "top1_localization",
        "gt_known_localization",
        "full_image_gt_known",
        "centre_box_gt_known",
    ]
    assert metrics["images"] == 160
    assert metrics["classification_top1"] >= 0.95
    # Objects of 15-40 px anywhere in 64 px images: a whole-image box never reaches IoU 0.5, a centred box of
    # the mean object size rarely does; CAM boxes find the object three times as often.
    assert metrics["full_image_gt_known"] == 0.0
    assert metrics["centre_box_gt_known"] <= 0.1
    assert metrics["gt_known_localization"] >= 0.18
    assert metrics["gt_known_localization"] >= 2.5 * metrics["centre_box_gt_known"]
    assert metrics["top1_localization"] <= metrics["gt_known_localization"]
    page = (out / "gallery.html").read_text()
    assert page.count("<img ") == 8 and "Best 4 by IoU" in page and "Worst 4 by IoU" in page
    assert len(list((out / "gallery").glob("*.png"))) == 8
    rows = (out / "cases.csv").read_text().splitlines()
    assert len(rows) == 161
    err = capsys.readouterr().err
    assert "localize" in err and "160/160" in err  # tqdm progress


def test_localize_reads_a_voc_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    voc = tmp_path / "VOC"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{i:06d}.jpg")
        (voc / "Annotations" / f"{i:06d}.xml").write_text(
            f"<annotation><folder>VOC2012</folder><filename>{i:06d}.jpg</filename><object><name>c{i}</name>"
            "<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax><ymax>18</ymax></bndbox></object></annotation>"
        )
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"c{i}\n" for i in range(10)))
    out = tmp_path / "out"
    args = ["localize", "--probe-set", str(voc), "--model", "toy", "--size", "32", "--out", str(out)]
    assert main(args) == 2
    assert "give --classes-file" in capsys.readouterr().err
    assert main([*args, "--classes-file", str(classes)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 3
    cases = (out / "cases.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in cases] == [[f"00000{i}.jpg", str(i)] for i in range(3)]
