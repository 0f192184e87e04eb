"""Feature visualization (`dissection.featviz`): the parametrization and transforms, reproducibility, the
check against the probe set on the toy network, and the `featviz` subcommand."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dissection.cli import main
from dissection.errors import LayerError
from dissection.featviz.check import best_from_probe_set, best_from_result
from dissection.featviz.param import (
    colour_matrix,
    frequency_scale,
    image_to_spectrum,
    random_spectrum,
    spectrum_to_image,
)
from dissection.featviz.render import Recipe, diversity_penalty, layer_reader, normalize, visualize
from dissection.featviz.transforms import Transforms
from dissection.networks import ToyNet, load_model
from dissection.pipeline import dissect

FAST = Recipe(steps=16, lr=0.2)
"""Few steps at a high learning rate: enough for the toy network at 32 px."""


def _toy(weights: Path) -> nn.Module:
    return load_model("toy", weights=weights)


@pytest.fixture(scope="module")
def conv4_result(probe_set_dir: Path, toy_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """result.json of a dissection of the toy's conv4 (one top image per unit: its best activation)."""
    out = tmp_path_factory.mktemp("dissect")
    folders = dissect(probe_set_dir, out, layers=["conv4"], model=_toy(toy_weights), topk=1, workers=0)
    return folders["conv4"] / "result.json"


@pytest.fixture(scope="module")
def conv4_featviz(
    toy_weights: Path, conv4_result: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """`featviz` of conv4's first 16 units at the probe images' size, checked against the dissection; the
    folder and what the command printed."""
    out = tmp_path_factory.mktemp("featviz") / "conv4"
    args = ["featviz", "--model", "toy", "--weights", str(toy_weights), "--layer", "conv4", "--units", "1-16"]
    args += ["--steps", "40", "--lr", "0.2", "--size", "64", "--out", str(out)]
    args += ["--dissection", str(conv4_result)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return out, printed.getvalue()


def test_fourier_parametrization_round_trips() -> None:
    generator = torch.Generator().manual_seed(0)
    for height, width in ((32, 32), (17, 24)):
        image = 0.02 + 0.96 * torch.rand(2, 3, height, width, generator=generator)
        spectrum = image_to_spectrum(image)
        assert spectrum.shape == (2, 3, height, width // 2 + 1, 2)
        assert torch.allclose(spectrum_to_image(spectrum, height, width), image, atol=1e-5)
    scale = frequency_scale(16, 16)
    assert scale[0, 0] == 16 and scale[0, 4] == pytest.approx(4.0) and scale[8, 8] == pytest.approx(2**0.5)
    assert colour_matrix().norm(dim=0).max() == pytest.approx(1.0)
    start = spectrum_to_image(random_spectrum(4, 32, 32, generator), 32, 32)
    assert (start - 0.5).abs().max() < 0.05  # Lucid's start: close to uniform grey


def test_transforms_keep_shape_and_range() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 40, 56, generator=generator)
    images[:, :, :4] = 1.0
    images[:, :, -4:] = 0.0
    moved = Transforms()(images, generator)
    assert moved.shape == images.shape
    assert moved.min() >= 0.0 and moved.max() <= 1.0
    assert (moved - images).abs().mean() > 0.05
    identity = Transforms(jitter=0, scales=(1.0,), angles=(0.0,), jitter_after=0)
    assert torch.allclose(identity(images, generator), images, atol=1e-5)


def test_same_seed_gives_the_same_images_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = ToyNet().eval()
    recipe = Recipe(steps=5, lr=0.2, diversity=2)
    first = visualize(model, "conv4", [1, 6], size=32, recipe=recipe, seed=3, negative=True)
    again = visualize(model, "conv4", [1, 6], size=32, recipe=recipe, seed=3, negative=True)
    other = visualize(model, "conv4", [1, 6], size=32, recipe=recipe, seed=4, negative=True)
    assert torch.equal(first.images, again.images)
    assert torch.equal(first.max_activation, again.max_activation)
    assert not torch.equal(first.images, other.images)
    assert first.channels == (1, 1, 1, 1, 6, 6, 6, 6) and first.indices == (0, 1, 0, 1) * 2
    assert first.directions[:4] == ("positive", "positive", "negative", "negative")
    assert all(not module._forward_hooks for module in model.modules())
    assert all("forward" not in vars(module) for module in model.modules())  # ReLUs are themselves again


def test_optimized_images_beat_the_best_probe_image(conv4_featviz: tuple[Path, str]) -> None:
    out, printed = conv4_featviz
    document = json.loads((out / "featviz.json").read_text())
    summary = document["summary"]
    print(
        f"conv4, 16 units, 40 steps at 64 px: {summary['share_above_1']:.0%} above the best probe image, "
        f"median relative activation {summary['median_relative_activation']:.2f}, "
        f"median selectivity {summary['median_selectivity']:.2f}"
    )
    assert summary["units"] == summary["units_with_figures"] == 16
    assert summary["share_above_1"] >= 0.6
    assert summary["median_relative_activation"] > 1.0
    assert summary["median_selectivity"] > 0.8
    assert "median relative activation" in printed and "units above 1" in printed
    for unit, image in zip(document["units"], document["images"], strict=True):
        assert image["relative_activation"] == pytest.approx(
            image["activation"]["max"] / unit["best_probe_activation"]
        )
        assert unit["relative_activation"] == pytest.approx(image["relative_activation"])
        assert 0.0 <= image["selectivity"] <= 1.0


def test_featviz_json_describes_each_png(conv4_featviz: tuple[Path, str], toy_weights: Path) -> None:
    out, _ = conv4_featviz
    document = json.loads((out / "featviz.json").read_text())
    assert document["layer"] == "conv4" and document["size"] == 64 and document["recipe"]["steps"] == 40
    assert document["best_activations"]["source"] == "dissection"
    images = document["images"]
    assert [image["file"] for image in images] == [f"unit_{unit:04d}.png" for unit in range(1, 17)]
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["featviz.json", *(i["file"] for i in images)]
    )
    assert all(i["unit"] == i["channel"] + 1 and i["direction"] == "positive" for i in images)
    pixels = np.stack([np.asarray(Image.open(out / image["file"]).convert("RGB")) for image in images])
    assert pixels.shape == (16, 64, 64, 3)
    batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad(), layer_reader(_toy(toy_weights), "conv4") as read:
        maps = read(normalize(batch))[torch.arange(16), torch.arange(16)]
    assert np.allclose(maps.amax((1, 2)), [i["activation"]["max"] for i in images], rtol=1e-4, atol=1e-4)
    assert np.allclose(maps.mean((1, 2)), [i["activation"]["mean"] for i in images], rtol=1e-4, atol=1e-4)


def test_best_probe_activations_match_the_dissection(
    conv4_result: Path, probe_set_dir: Path, toy_weights: Path
) -> None:
    from_result = best_from_result(conv4_result, "conv4", 128)
    from_probe = best_from_probe_set(_toy(toy_weights), "conv4", probe_set_dir, workers=0)
    assert np.allclose(from_result, from_probe, rtol=1e-5)


def test_negative_direction_lowers_the_activation_below_a_random_image(toy_weights: Path) -> None:
    model = _toy(toy_weights)
    units = [0, 3, 8]
    vis = visualize(model, "conv4", units, size=32, recipe=FAST, negative=True)
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), layer_reader(model, "conv4") as read:
        random_mean = read(normalize(noise))[0, units].mean((1, 2))
    positive = vis.mean_activation[[i for i, d in enumerate(vis.directions) if d == "positive"]]
    negative = vis.mean_activation[[i for i, d in enumerate(vis.directions) if d == "negative"]]
    assert (negative < random_mean).all() and (negative < positive).all()


def test_diversity_gives_different_images_per_unit(toy_weights: Path) -> None:
    model = _toy(toy_weights)
    plain = Recipe(steps=16, lr=0.2, diversity=2, diversity_weight=0.0)
    diverse = Recipe(steps=16, lr=0.2, diversity=2, diversity_weight=5.0)
    similarity = []
    for recipe in (plain, diverse):
        vis = visualize(model, "conv4", [0, 3], size=32, recipe=recipe)
        assert vis.channels == (0, 0, 3, 3) and vis.indices == (0, 1, 0, 1)
        assert (vis.images[0] - vis.images[1]).abs().mean() > 0.05
        assert (vis.images[2] - vis.images[3]).abs().mean() > 0.05
        with torch.no_grad(), layer_reader(model, "conv4") as read:
            similarity.append(float(diversity_penalty(read(normalize(vis.images)), 2)))
    assert similarity[1] < similarity[0]  # the Gram penalty makes the pairs less alike


def test_cli_probe_set_negative_and_diversity(
    probe_set_dir: Path, toy_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "viz"
    args = ["featviz", "--model", "toy", "--weights", str(toy_weights), "--layer", "conv4", "--units", "3,6"]
    args += ["--steps", "3", "--size", "32", "--out", str(out), "--probe-set", str(probe_set_dir)]
    assert main([*args, "--negative", "--diversity", "2", "--seed", "1"]) == 0
    document = json.loads((out / "featviz.json").read_text())
    names = [image["file"] for image in document["images"]]
    assert names == [
        f"unit_{unit:04d}{suffix}.png" for unit in (3, 6) for suffix in ("_d1", "_d2", "_neg_d1", "_neg_d2")
    ]
    assert all((out / name).is_file() for name in names)
    assert [unit["channel"] for unit in document["units"]] == [2, 5]
    assert document["best_activations"]["source"] == "probe-set" and document["negative"] is True
    assert "median relative activation" in capsys.readouterr().out
    assert main([*args, "--seed", "2"]) == 0  # an earlier featviz folder is replaced
    assert len(json.loads((out / "featviz.json").read_text())["images"]) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--layer": "conv9"}, "unknown layer 'conv9'"),
        (
            {"--units": "0-999"},
            "--units 0-999: layer 'conv4' has 128 units (1-128); 872 asked for are outside",
        ),
        ({"--units": "3,x"}, "--units '3,x': expected units such as 1-16 or 4,8,11-13"),
        ({"--channels": "0-999"}, "--channels 0-999: layer 'conv4' has 128 channels (0-127); 872 asked for"),
        ({"--units": "3-1"}, "runs backwards"),
        ({"--layer": "fc"}, "layer 'fc' outputs shape (1, 5); dissection needs N x C x H x W"),
        ({"--layer": "output"}, "layer 'output' outputs shape (1, 5); dissection needs N x C x H x W"),
        ({"--dissection": "conv3"}, "is a dissection of layer 'conv3', not 'conv4'"),
        ({"--out": "occupied"}, "exists and is not a featviz folder"),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(
    change: dict[str, str],
    message: str,
    conv4_result: Path,
    toy_weights: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = {
        "--model": "toy",
        "--weights": str(toy_weights),
        "--layer": "conv4",
        "--units": "1-4",
        "--steps": "2",
        "--size": "32",
        "--out": str(tmp_path / "viz"),
        "--dissection": str(conv4_result),
    }
    options.update(change)
    if "--channels" in change:
        del options["--units"]  # one of the two
    if change.get("--dissection") == "conv3":
        wrong = json.loads(conv4_result.read_text()) | {"layer": "conv3"}
        options["--dissection"] = str(tmp_path / "result.json")
        Path(options["--dissection"]).write_text(json.dumps(wrong))
    if change.get("--out") == "occupied":
        options["--out"] = str(tmp_path / "occupied")
        (tmp_path / "occupied").mkdir()
        (tmp_path / "occupied" / "notes.txt").write_text("mine")
    before = sorted(path.name for path in tmp_path.iterdir())
    assert main(["featviz", *(item for pair in options.items() for item in pair)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    if change.get("--out") == "occupied":
        assert (tmp_path / "occupied" / "notes.txt").read_text() == "mine"


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_model_traced_up_to_the_layer(toy_weights: Path, tmp_path: Path) -> None:
    toy = _toy(toy_weights)
    trunk = nn.Sequential(toy.conv1, toy.pool1, toy.conv2, toy.pool2, toy.conv3, toy.conv4).eval()
    path = tmp_path / "trunk.pt"
    torch.jit.save(torch.jit.trace(trunk, torch.rand(1, 3, 32, 32)), str(path))
    common = ["featviz", "--torchscript", str(path), "--channels", "0-1", "--steps", "2", "--size", "32"]
    assert main([*common, "--layer", "output", "--out", str(tmp_path / "viz")]) == 0
    assert len(json.loads((tmp_path / "viz" / "featviz.json").read_text())["images"]) == 2
    with pytest.raises(LayerError, match="a TorchScript model runs no forward hooks"):
        from dissection.featviz.render import layer_shape

        layer_shape(torch.jit.load(str(path)), "4", 32)
