"""TorchScript models run no forward hooks: their output is the one layer they offer (`--layer output`, the
network traced up to the layer to dissect), and asking for an inner layer is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from dissection.cli import main
from dissection.hooks import OUTPUT, layer_names
from dissection.networks import ToyNet, load_model
from dissection.synth import make_probe_set


class UpToConv4(nn.Module):
    def __init__(self, model: ToyNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.conv4(m.conv3(m.pool2(m.conv2(m.pool1(m.conv1(x))))))


def _run(probe: Path, out: Path, *source: str, layer: str) -> int:
    args = ["run", "--probe-set", str(probe), *source, "--layer", layer, "--out", str(out)]
    return main([*args, "--workers", "0", "--topk", "2"])


def test_a_traced_network_dissects_its_output_as_the_layer(tmp_path: Path, capsys) -> None:
    probe = make_probe_set(tmp_path / "set", images=8, size=32, seed=1)
    torch.manual_seed(0)
    model = ToyNet(num_classes=5).eval()
    torch.save(model.state_dict(), tmp_path / "toy.pt")
    traced = tmp_path / "upto.pt"
    torch.jit.trace(UpToConv4(model), torch.rand(1, 3, 32, 32)).save(str(traced))
    assert layer_names(torch.jit.load(str(traced))) == [OUTPUT]
    assert _run(probe, tmp_path / "ts", "--torchscript", str(traced), layer=OUTPUT) == 0
    assert (
        _run(
            probe, tmp_path / "eager", "--model", "toy", "--weights", str(tmp_path / "toy.pt"), layer="conv4"
        )
        == 0
    )
    scripted = json.loads((tmp_path / "ts" / OUTPUT / "result.json").read_text())["units"]
    eager = json.loads((tmp_path / "eager" / "conv4" / "result.json").read_text())["units"]
    assert [(u["label"], round(u["iou"], 6)) for u in scripted] == [
        (u["label"], round(u["iou"], 6)) for u in eager
    ]
    assert isinstance(load_model(torchscript=traced), torch.jit.ScriptModule)


def test_an_inner_layer_of_a_torchscript_model_is_a_clear_error(tmp_path: Path, capsys) -> None:
    probe = make_probe_set(tmp_path / "set", images=4, size=32, seed=1)
    scripted = tmp_path / "toy_ts.pt"
    torch.jit.script(ToyNet(num_classes=5).eval()).save(str(scripted))
    assert _run(probe, tmp_path / "out", "--torchscript", str(scripted), layer="conv4") == 2
    message = capsys.readouterr().err
    assert (
        "layer 'conv4': a TorchScript model runs no forward hooks" in message and "--layer output" in message
    )
    assert not (tmp_path / "out" / "conv4").exists()
