"""The toy pair through the CLI, trained for a few steps only: gan-run writes a dissection, gan-effect
finite curves and plots that the same seed reproduces exactly; the toy generator's latent prior draws
scenes as `synth` does; the segmenter's quality numbers follow their definitions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dissection.cli import main
from dissection.gan.toys import SEGMENTER_CLASSES, ScenePrior, scene_of_code
from dissection.gan.train import segmentation_quality
from dissection.synth import _BACKGROUND_COLORS, _OBJECT_COLORS, make_probe_set


@pytest.fixture(scope="module")
def toy_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toys")
    make_probe_set(root / "synth", images=10, size=32, seed=0)
    assert (
        main(
            [
                "train-toy-segmenter",
                str(root / "seg.pt"),
                "--probe-set",
                str(root / "synth"),
                "--epochs",
                "1",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert (
        main(["train-toy-generator", str(root / "gen.pt"), "--steps", "1", "--scenes", "8", "--threads", "1"])
        == 0
    )
    return root


def test_the_toy_pair_dissects_and_its_effects_are_finite_and_reproducible(
    toy_pair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (toy_pair / "gen-samples.png").is_file()
    out = toy_pair / "run"
    models = ["--generator", str(toy_pair / "gen.pt"), "--segmenter", str(toy_pair / "seg.pt")]
    assert (
        main(
            [
                "gan-run",
                *models,
                "--layer",
                "layer2",
                "--samples",
                "12",
                "--seed",
                "4",
                "--out",
                str(out),
                "--mask-size",
                "32,32",
            ]
        )
        == 0
    )
    folder = out / "layer2"
    result = json.loads((folder / "result.json").read_text())
    assert result["num_units"] == 24 and result["num_images"] == 12
    gan = json.loads((folder / "gan.json").read_text())
    assert gan["mask_size"] == [32, 32] and gan["generator"]["latent_shape"] == [11]
    concept = gan["concepts"][1]["label"]

    def effect(target: Path) -> dict:
        argv = ["gan-effect", "--dissection", str(folder), "--concept", concept, "--samples", "6"]
        assert main([*argv, "--limit", "2", "--controls", "1", "--grid", "2", "--out", str(target)]) == 0
        return json.loads((target / concept / "effects.json").read_text())

    first, second = effect(toy_pair / "e1"), effect(toy_pair / "e2")
    assert first == second
    assert [c["units"] for c in first["curves"]] == [1, 2]
    for curve in first["curves"]:
        for key in ("ablation", "ablation_control", "insertion", "insertion_control"):
            if curve[key] is not None:
                assert all(math.isfinite(curve[key][field]) for field in ("mean", "low", "high"))
    for name in ("effect.png", "ablation.png"):
        assert (toy_pair / "e1" / concept / name).stat().st_size > 0


def test_gan_effect_refuses_a_concept_the_segmenter_lacks(
    toy_pair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = toy_pair / "run2"
    models = ["--generator", str(toy_pair / "gen.pt"), "--segmenter", str(toy_pair / "seg.pt")]
    assert (
        main(
            [
                "gan-run",
                *models,
                "--layer",
                "layer1",
                "--samples",
                "4",
                "--out",
                str(out),
                "--mask-size",
                "16,16",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["gan-effect", "--dissection", str(out / "layer1"), "--concept", "dome"]) == 2
    assert "concept 'dome' is not one of the segmenter's: house, tree" in capsys.readouterr().err
    assert main(["gan-run", *models, "--layer", "layer9", "--samples", "4", "--out", str(out)]) == 2
    assert "has no layer 'layer9'" in capsys.readouterr().err


def test_the_latent_prior_draws_scenes_as_synth_does() -> None:
    codes = ScenePrior()(torch.randn(4000, 11, generator=torch.Generator().manual_seed(0))).numpy()
    scenes = [scene_of_code(code) for code in codes]
    assert all(s.primary != s.background and s.primary in _OBJECT_COLORS for s in scenes)
    assert all(s.s <= s.cx <= 1 - s.s and s.s <= s.cy <= 1 - s.s and 0.12 <= s.s <= 0.3 for s in scenes)
    assert {s.background for s in scenes} == set(_BACKGROUND_COLORS)
    assert np.mean([s.material is None for s in scenes]) == pytest.approx(0.25, abs=0.03)
    assert all((s.material is None) == (s.floor == 1.0) for s in scenes)


def test_segmentation_quality_follows_its_definitions() -> None:
    target = torch.tensor([[0, 1, 1], [2, 2, 0]])
    predicted = torch.tensor([[0, 1, 2], [2, 2, 2]])
    quality = segmentation_quality(predicted, target)
    assert quality["pixel_accuracy"] == pytest.approx(4 / 6)
    name = [n for n, _ in SEGMENTER_CLASSES]
    assert quality["iou"] == {name[0]: 1 / 2, name[1]: 1 / 2, name[2]: 2 / 4}
    assert quality["mean_iou"] == pytest.approx((1 / 2 + 1 / 2 + 2 / 4) / 3)
