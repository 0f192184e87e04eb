"""Batch norms fold into the convolution before them only where nothing a dissection reads can tell."""

from __future__ import annotations

import torch
from torch import nn

from dissection.fold import fold_batchnorm, foldable_pairs
from dissection.networks import ToyNet
from dissection.sources import ModelActivations


def _toy() -> ToyNet:
    """A ToyNet whose batch norms are not the identity: random running statistics and affine parameters."""
    torch.manual_seed(0)
    model = ToyNet(num_classes=5, width=8)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _outputs(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    kept: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: kept.append(out.clone()))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return kept[0]


class Shared(nn.Module):
    """conv's output feeds the batch norm and also a skip connection: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class Branching(Shared):
    """The same modules, with control flow on a tensor's value: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.bn(self.conv(x))
        return x


class StandardizedConv(nn.Conv2d):
    """A convolution subclass with its own forward (weight standardization): not a plain convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / (
            self.weight.std((1, 2, 3), keepdim=True) + 1e-5
        )
        return self._conv_forward(x, weight, self.bias)


def test_every_conv_bn_pair_of_the_toy_folds_and_the_outputs_equal_the_plain_forward():
    model = _toy()
    images = torch.randn(4, 3, 32, 32)
    assert foldable_pairs(model) == [
        ("conv1.0", "conv1.1"),
        ("conv2.0", "conv2.1"),
        ("conv3.0", "conv3.1"),
        ("conv4.0", "conv4.1"),
    ]
    folded = fold_batchnorm(model)
    assert isinstance(folded.get_submodule("conv4.1"), nn.Identity)
    for layer in ("conv1", "conv3", "conv4", "fc"):
        torch.testing.assert_close(_outputs(folded, layer, images), _outputs(model, layer, images))


def test_the_callers_model_is_not_changed_and_shares_what_is_not_folded():
    model = _toy()
    before = {name: id(module) for name, module in model.named_modules()}
    state = {name: value.clone() for name, value in model.state_dict().items()}
    source = ModelActivations(model, ["conv4"], device="cpu", workers=0)

    assert source.model is not model
    assert source.model.get_submodule("fc").weight is model.fc.weight  # what is not folded is shared
    assert {name: id(module) for name, module in model.named_modules()} == before
    assert isinstance(model.get_submodule("conv4.1"), nn.BatchNorm2d)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)


def test_a_layer_being_read_keeps_its_own_output():
    model = _toy()
    images = torch.randn(2, 3, 32, 32)
    assert ("conv2.0", "conv2.1") not in foldable_pairs(model, keep=["conv2.0"])
    assert ("conv3.0", "conv3.1") not in foldable_pairs(model, keep=["conv3.1"])
    source = ModelActivations(model, ["conv2.0", "conv3.1"], device="cpu", workers=0)
    with torch.no_grad():
        source._forward(images, first=True)
    assert isinstance(source.model.get_submodule("conv2.1"), nn.BatchNorm2d)
    assert isinstance(source.model.get_submodule("conv1.1"), nn.Identity)
    # conv2.0 is read before its batch norm, as in the unfolded model
    torch.testing.assert_close(
        _outputs(source.model, "conv2.0", images.contiguous(memory_format=torch.channels_last)),
        _outputs(model, "conv2.0", images),
        rtol=1e-4,
        atol=1e-5,
    )


def test_a_conv_whose_output_is_used_twice_is_not_folded():
    assert foldable_pairs(Shared().eval()) == []


def test_an_untraceable_model_is_left_as_it_is():
    model = Branching().eval()
    assert foldable_pairs(model) == []
    assert fold_batchnorm(model) is model


def test_batch_statistics_and_conv_subclasses_are_not_folded():
    no_running = nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3, track_running_stats=False)).eval()
    subclass = nn.Sequential(StandardizedConv(3, 3, 3), nn.BatchNorm2d(3)).eval()
    plain = nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)).eval()

    assert foldable_pairs(no_running) == []
    assert foldable_pairs(subclass) == []
    assert foldable_pairs(plain) == [("0", "1")]
