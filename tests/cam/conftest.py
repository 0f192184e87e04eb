"""Random-weight models for the CAM tests, with batch norm calibrated so logits are not vanishingly small.

torchvision's default initialization with unit running variance shrinks activations layer by layer (mobilenet_v2's
logits come out near 1e-9), which would make equality checks trivially true. Calibrating the running statistics
on one random batch, with random affine parameters, gives O(1) features and logits without any download.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from dissection.models import load_model

# Families with a global-average-pooling + linear head, the input size each needs for a map larger than 1 x 1,
# and the feature layer that head detection must find.
GAP_FAMILIES = {
    "toy": (32, "conv4", False),
    "resnet18": (64, "layer4", False),
    "densenet121": (64, "features", True),
    "googlenet": (64, "inception5b", False),
    "mobilenet_v2": (64, "features", False),
    "inception_v3": (160, "Mixed_7c", False),
    "efficientnet_b0": (64, "features", False),
    "regnet_y_400mf": (64, "trunk_output", False),
    "shufflenet_v2_x0_5": (64, "conv5", False),
}
NO_HEAD_FAMILIES = {"alexnet": (112, "features"), "vgg11": (64, "features"), "mobilenet_v3_small": (64, "features")}


def calibrated(model: nn.Module, size: int, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics measured on one random batch; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size, generator=generator))
    return model.eval()


@pytest.fixture(scope="session")
def random_model() -> Callable[[str], nn.Module]:
    """arch -> a calibrated random-weight model, built once per session."""
    cache: dict[str, nn.Module] = {}

    def build(arch: str) -> nn.Module:
        if arch not in cache:
            torch.manual_seed(0)
            size = {**{k: v[0] for k, v in GAP_FAMILIES.items()}, **{k: v[0] for k, v in NO_HEAD_FAMILIES.items()}}
            cache[arch] = calibrated(load_model(arch), size[arch])
        return cache[arch]

    return build
