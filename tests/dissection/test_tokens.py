"""Transformer layers read as feature maps: the reshape rule by hand on toy token tensors, clear errors for
what cannot be reshaped, torchvision vit_b_16 and swin_t dissected end to end (random weights), and Grad-CAM
on the reshaped tokens against a hand-written Grad-CAM."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dissection.broden import load_probe_set
from dissection.cam.gradcam import grad_cams
from dissection.cli import main
from dissection.errors import LayerError
from dissection.hooks import capture_outputs
from dissection.networks import load_model
from dissection.sources import ModelActivations
from dissection.synth import make_probe_set
from dissection.tokens import TokenRule, parse_rule, resolve_layout


def hand_map(tokens: torch.Tensor, prefix: int, h: int, w: int) -> torch.Tensor:
    """Token p + y·w + x is pixel (y, x): the patch order of a ViT (conv, flatten, transpose)."""
    n, _, c = tokens.shape
    out = torch.empty(n, c, h, w)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                out[b, :, y, x] = tokens[b, prefix + y * w + x]
    return out


def test_cls_and_four_register_tokens_are_dropped_and_the_rest_gridded_by_hand() -> None:
    tokens = torch.randn(2, 1 + 4 + 6 * 8, 5)
    layout = resolve_layout("block", tuple(tokens.shape), parse_rule("auto"), (96, 128))
    assert (layout.kind, layout.prefix, layout.grid) == ("tokens", 5, (6, 8))
    assert torch.equal(layout.to_map(tokens), hand_map(tokens, 5, 6, 8))
    assert layout.describe() == "N x 53 x 5 tokens -> 5 x 6 x 8, 5 prefix tokens dropped"
    declared = resolve_layout("block", tuple(tokens.shape), parse_rule("cls+4"), (96, 128))
    assert declared == layout
    rebuilt = layout.to_output(layout.to_map(tokens), tokens)
    assert torch.equal(rebuilt, tokens)


@pytest.mark.parametrize(
    ("rule", "shape", "input_size", "expected"),
    [
        ("auto", (2, 197, 768), (224, 224), ("tokens", 1, (14, 14))),
        ("auto", (2, 196, 768), (224, 224), ("tokens", 0, (14, 14))),
        ("patches", (2, 196, 768), (224, 224), ("tokens", 0, (14, 14))),
        ("cls", (2, 197, 768), (224, 224), ("tokens", 1, (14, 14))),
        ("auto", (2, 1 + 14 * 20, 64), (224, 320), ("tokens", 1, (14, 20))),
        ("auto", (2, 56, 56, 96), (224, 224), ("nhwc", 0, (56, 56))),
        ("channels-last", (2, 7, 7, 768), (224, 224), ("nhwc", 0, (7, 7))),
        ("auto", (2, 512, 7, 7), (224, 224), ("nchw", 0, (7, 7))),
        ("auto", (2, 32, 32, 32), (32, 32), ("nchw", 0, (32, 32))),
        ("none", (2, 64, 56, 56), (224, 224), ("nchw", 0, (56, 56))),
    ],
)
def test_rules_read_each_layout(
    rule: str, shape: tuple[int, ...], input_size: tuple[int, int], expected: tuple[str, int, tuple[int, int]]
) -> None:
    layout = resolve_layout("layer", shape, parse_rule(rule), input_size)
    assert (layout.kind, layout.prefix, layout.grid) == expected
    assert layout.to_map(torch.zeros(shape)).shape == (shape[0], layout.channels, *layout.grid)


def test_channels_last_is_a_permutation() -> None:
    output = torch.randn(2, 3, 4, 5)
    layout = resolve_layout("stage", (2, 3, 4, 5), TokenRule("channels-last"), (3, 4))
    assert torch.equal(layout.to_map(output), output.permute(0, 3, 1, 2))
    assert torch.equal(layout.to_output(layout.to_map(output), output), output)


@pytest.mark.parametrize(
    ("rule", "shape", "message"),
    [
        ("auto", (2, 10), "layer 'head' outputs shape (2, 10); dissection needs N x C x H x W and cannot"),
        ("auto", (2, 1000, 8), "layer 'head' outputs 2 x 1000 x 8; cannot reshape it"),
        ("cls", (2, 196, 8), "no number of tokens leaves a grid after 1 prefix token(s)"),
        ("cls", (2, 3, 4, 5), "--tokens cls needs N x tokens x C"),
        ("channels-last", (2, 197, 8), "--tokens channels-last needs N x H x W x C"),
        ("none", (2, 197, 8), "dissection needs N x C x H x W (for a transformer layer, pass --tokens"),
    ],
)
def test_what_cannot_be_reshaped_is_refused_with_its_shape_and_layer(
    rule: str, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(LayerError, match="layer 'head'") as error:
        resolve_layout("head", shape, parse_rule(rule), (224, 224))
    assert message in str(error.value)


def test_an_ambiguous_token_count_names_the_readings_and_asks_for_a_rule() -> None:
    # 145 tokens of a 200 px image: 1 + 12 x 12 (stride 16, rounded) or 13 + 11 x 12 (stride 17, rounded).
    with pytest.raises(LayerError, match="more than one reading fits") as error:
        resolve_layout("block", (1, 145, 8), parse_rule("auto"), (200, 200))
    assert "cls (12 x 12)" in str(error.value) and "--tokens" in str(error.value)
    assert resolve_layout("block", (1, 145, 8), parse_rule("cls"), (200, 200)).grid == (12, 12)


def test_unknown_rules_are_refused() -> None:
    with pytest.raises(LayerError, match="--tokens 'tokens' is not one of auto, none"):
        parse_rule("tokens")


def test_capture_outputs_reshapes_and_records_the_layout() -> None:
    class Tokens(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            patches = x[:, :, ::8, ::8].flatten(2).transpose(1, 2)
            prefix = torch.ones(x.shape[0], 5, x.shape[1])
            return torch.cat([prefix, patches], dim=1)

    model = nn.Sequential(Tokens())
    images = torch.randn(2, 3, 32, 48)
    layouts: dict = {}
    with capture_outputs(
        model, ["0"], tokens=parse_rule("auto"), input_size=(32, 48), layouts=layouts
    ) as got:
        model(images)
    assert torch.equal(got["0"], images[:, :, ::8, ::8])
    assert got["0"].is_contiguous()
    assert layouts["0"].prefix == 5


@pytest.fixture(scope="module")
def probe_224(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_probe_set(tmp_path_factory.mktemp("p224") / "probe", images=8, size=224, seed=3)


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    """Random weights; torchvision zero-initializes the classifier, which would make every gradient 0."""
    torch.manual_seed(0)
    model = load_model("vit_b_16")
    with torch.no_grad():
        model.heads.head.weight.normal_(0.0, 0.02)
    return model


@pytest.mark.slow
def test_vit_b_16_block_dissects_end_to_end(
    vit: nn.Module, probe_224: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layer = "encoder.layers.encoder_layer_3"
    source = ModelActivations(vit, [layer], device="cpu", workers=0)
    tokens: dict[str, torch.Tensor] = {}
    handle = vit.get_submodule(layer).register_forward_hook(lambda _m, _i, o: tokens.update(t=o.detach()))
    try:
        _, outputs = next(source.batches(load_probe_set(probe_224), [0, 1], batch_size=2))
    finally:
        handle.remove()
    assert torch.equal(outputs[layer], hand_map(tokens["t"], 1, 14, 14))
    assert source.layouts[layer].prefix == 1

    out = tmp_path / "out"
    args = ["run", "--probe-set", str(probe_224), "--model", "vit_b_16", "--layer", layer, "--out", str(out)]
    assert main([*args, "--batch-size", "4", "--workers", "0", "--topk", "2"]) == 0
    assert "tokens: N x 197 x 768 tokens -> 768 x 14 x 14, 1 prefix token dropped" in capsys.readouterr().out
    result = json.loads((out / layer / "result.json").read_text())
    assert result["num_units"] == 768 and result["num_images"] == 8
    recorded = json.loads((out / layer / "tokens.json").read_text())
    assert (recorded["prefix_tokens"], recorded["grid"]) == (1, [14, 14])
    with (out / layer / "tally.csv").open() as handle_csv:
        assert len(list(csv.DictReader(handle_csv))) == 768


@pytest.mark.slow
def test_swin_t_stage_dissects_end_to_end(probe_224: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = load_model("swin_t")
    probe = load_probe_set(probe_224)
    source = ModelActivations(model, ["features.1"], device="cpu", workers=0)
    with capture_outputs(model, ["features.1"], require_4d=False) as raw, torch.no_grad():
        _, outputs = next(source.batches(probe, [0], batch_size=1))
        pixels = torch.from_numpy(probe.load_image(0).copy()).permute(2, 0, 1)[None].float() / 255
        model((pixels - source.mean) / source.std)
    assert torch.equal(outputs["features.1"], raw["features.1"].permute(0, 3, 1, 2))

    out = tmp_path / "out"
    args = [
        "run",
        "--probe-set",
        str(probe_224),
        "--model",
        "swin_t",
        "--layer",
        "features.1",
        "--out",
        str(out),
    ]
    assert main([*args, "--batch-size", "4", "--workers", "0", "--topk", "2"]) == 0
    result = json.loads((out / "features.1" / "result.json").read_text())
    assert result["num_units"] == 96
    assert json.loads((out / "features.1" / "tokens.json").read_text())["kind"] == "nhwc"


def test_a_layer_that_cannot_be_reshaped_is_refused_with_its_shape_and_name(
    vit: nn.Module, probe_224: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = ModelActivations(vit, ["heads"], device="cpu", workers=0)
    with pytest.raises(
        LayerError,
        match=r"layer 'heads' outputs shape \(1, 1000\); dissection needs N x C x H x W and cannot reshape",
    ):
        next(source.batches(load_probe_set(probe_224), [0], batch_size=1))
    args = [
        "run",
        "--probe-set",
        str(probe_224),
        "--model",
        "toy",
        "--layer",
        "fc",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--workers", "0"]) == 2
    assert "layer 'fc' outputs shape (8, 10); dissection needs N x C x H x W" in capsys.readouterr().err
    assert not (tmp_path / "o" / "fc").exists()


def hand_gradcam(model: nn.Module, layer: str, images: torch.Tensor, cls: int) -> torch.Tensor:
    """Grad-CAM from its definition on a ViT block: gradients of the class score with respect to the patch
    tokens, spatially averaged per channel, weighting the tokens laid out on the 14 x 14 grid."""
    kept: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: object, output: torch.Tensor) -> None:
        output.retain_grad()
        kept["tokens"] = output

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        logits = model(images)
        logits[:, cls].sum().backward()
    finally:
        handle.remove()
    tokens, grads = kept["tokens"].detach(), kept["tokens"].grad
    assert grads is not None
    maps = []
    for b in range(images.shape[0]):
        activation = hand_map(tokens[b : b + 1], 1, 14, 14)[0]
        gradient = hand_map(grads[b : b + 1], 1, 14, 14)[0]
        alpha = gradient.mean(dim=(1, 2))
        maps.append(torch.relu((alpha[:, None, None] * activation).sum(0)))
    return torch.stack(maps)


def test_gradcam_on_vit_tokens_matches_a_hand_written_one(vit: nn.Module) -> None:
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    layer = "encoder.layers.encoder_layer_10"
    result = grad_cams(vit, images, classes=[3], layer=layer, tokens="auto")
    assert result.maps.shape == (1, 1, 14, 14)
    expected = hand_gradcam(vit, layer, images, 3)
    assert expected.abs().max() > 0
    np.testing.assert_allclose(result.maps[:, 0].numpy(), expected.numpy(), rtol=1e-4, atol=1e-7)
    with pytest.raises(LayerError, match="Grad-CAM needs an N x C x H x W feature map"):
        grad_cams(vit, images, classes=[3], layer=layer)
