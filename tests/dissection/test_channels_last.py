"""ModelActivations runs convolutional models channels-last: the activations it yields are those of the plain
forward (to float rounding) in the usual layout, and a model that cannot take that layout still dissects."""

from __future__ import annotations

import torch
from torch import nn

from dissection.broden import load_probe_set
from dissection.data import image_batches
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.networks import ToyNet
from dissection.sources import ModelActivations


class Flattening(nn.Module):
    """A net whose head `.view`s its feature map, as older model code does: channels-last cannot pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.fc = nn.LazyLinear(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(x.view(x.size(0), -1))


def plain_outputs(model: nn.Module, layer: str, probe_dir) -> torch.Tensor:
    """The layer's outputs from the obvious loop: normalize, forward in the plain layout, keep the output."""
    probe = load_probe_set(probe_dir)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    kept: list[torch.Tensor] = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, output: kept.append(output.detach().clone())
    )
    try:
        with torch.no_grad():
            for _, pixels in image_batches(probe, range(len(probe)), batch_size=8, workers=0):
                model(((pixels - mean) / std).contiguous())
    finally:
        handle.remove()
    return torch.cat(kept)


def source_outputs(source: ModelActivations, layer: str, probe_dir) -> torch.Tensor:
    probe = load_probe_set(probe_dir)
    return torch.cat([acts[layer] for _, acts in source.batches(probe, range(len(probe)), batch_size=8)])


def test_a_convolutional_model_runs_channels_last_and_yields_the_plain_activations(probe_set_dir):
    torch.manual_seed(0)
    model = ToyNet(num_classes=5, width=8).eval()
    expected = plain_outputs(model, "conv4", probe_set_dir)
    source = ModelActivations(model, ["conv4"], device="cpu", workers=0)
    got = source_outputs(source, "conv4", probe_set_dir)

    assert source.channels_last
    assert got.is_contiguous()
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_model_that_views_its_feature_map_falls_back_to_the_plain_layout(probe_set_dir):
    torch.manual_seed(0)
    model = Flattening().eval()
    probe = load_probe_set(probe_set_dir)
    with torch.no_grad():
        model(torch.zeros(1, 3, *probe.image_size))
    expected = plain_outputs(model, "conv2", probe_set_dir)
    source = ModelActivations(model, ["conv2"], device="cpu", workers=0)
    got = source_outputs(source, "conv2", probe_set_dir)

    assert not source.channels_last
    assert next(model.parameters()).is_contiguous()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
