"""CAM, Grad-CAM and unit contributions against their definitions on random-weight models of every family."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from dissection.cam.gradcam import grad_cams, gradcam_layer
from dissection.cam.heads import GapHead, detect_gap_head, head_parameters, inspect_model
from dissection.cam.maps import ClassIndexError, class_activation_maps
from dissection.cam.units import explain_predictions, unit_contributions
from dissection.errors import DissectionError, LayerError, ModelError
from dissection.hooks import resolve_layer

from .conftest import GAP_FAMILIES, NO_HEAD_FAMILIES

Builder = Callable[[str], nn.Module]


def _images(size: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _feature_map(model: nn.Module, images: torch.Tensor, head: GapHead) -> torch.Tensor:
    """The pooled map, read by a plain hook written here (clone: densenet's in-place relu follows)."""
    kept = {}
    handle = resolve_layer(model, head.feature_layer).register_forward_hook(
        lambda _m, _i, out: kept.__setitem__("f", out.detach().clone())
    )
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return kept["f"].relu() if head.relu else kept["f"]


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("arch", list(GAP_FAMILIES))
def test_head_detection_finds_the_pooled_feature_map(arch: str, random_model: Builder) -> None:
    size, layer, relu = GAP_FAMILIES[arch]
    model = random_model(arch)
    head = detect_gap_head(model, _images(size, 1))
    assert (head.feature_layer, head.relu) == (layer, relu)
    assert isinstance(resolve_layer(model, head.linear_layer), nn.Linear)
    assert _no_hooks(model)


@pytest.mark.parametrize("arch", list(GAP_FAMILIES))
def test_cam_mean_plus_bias_is_the_logit_and_matches_the_definition(arch: str, random_model: Builder) -> None:
    size = GAP_FAMILIES[arch][0]
    model = random_model(arch)
    images = _images(size)
    result = class_activation_maps(model, images, topk=3)
    logits = result.logits
    assert logits.abs().max() > 1e-2  # calibrated: the equality below is not between near-zeros
    head = detect_gap_head(model, images[:1])
    weight, bias = head_parameters(model, head)
    chosen_logits = logits.gather(1, result.classes)
    mean_plus_bias = result.maps.mean(dim=(2, 3)) + bias[result.classes]
    assert torch.allclose(mean_plus_bias, chosen_logits, rtol=1e-4, atol=1e-4)
    features = _feature_map(model, images, head)
    for n in range(images.shape[0]):
        for j, c in enumerate(result.classes[n].tolist()):
            reference = sum(weight[c, k] * features[n, k] for k in range(features.shape[1]))
            assert torch.allclose(result.maps[n, j], reference, rtol=1e-4, atol=1e-5)
    assert torch.equal(result.classes, logits.topk(3, dim=1).indices)
    assert _no_hooks(model)


@pytest.mark.parametrize("arch", list(GAP_FAMILIES))
def test_gradcam_is_relu_cam_over_positions_for_gap_heads(arch: str, random_model: Builder) -> None:
    size = GAP_FAMILIES[arch][0]
    model = random_model(arch)
    images = _images(size)
    cam = class_activation_maps(model, images, topk=2)
    grad = grad_cams(model, images, classes=cam.classes)
    positions = cam.maps.shape[2] * cam.maps.shape[3]
    scale = float(cam.maps.abs().max()) / positions
    assert torch.allclose(grad.maps, cam.maps.relu() / positions, rtol=1e-3, atol=1e-4 * scale)
    assert (grad.maps > 0).any()
    assert torch.allclose(grad.logits, cam.logits, rtol=1e-5, atol=1e-6)
    assert _no_hooks(model)


@pytest.mark.parametrize("arch", list(GAP_FAMILIES))
def test_contributions_plus_bias_sum_to_the_logit(arch: str, random_model: Builder) -> None:
    size = GAP_FAMILIES[arch][0]
    model = random_model(arch)
    images = _images(size)
    explained = explain_predictions(model, images, topk=2)
    head = detect_gap_head(model, images[:1])
    weight, _ = head_parameters(model, head)
    means = _feature_map(model, images, head).mean(dim=(2, 3))
    for n, per_image in enumerate(explained):
        for explanation in per_image:
            total = sum(u.contribution for u in explanation.units) + explanation.bias
            assert total == pytest.approx(explanation.logit, rel=1e-4, abs=1e-4)
            contributions = [u.contribution for u in explanation.units]
            assert contributions == sorted(contributions, reverse=True)
            top = explanation.units[0]
            c = explanation.class_index
            assert top.weight == pytest.approx(float(weight[c, top.channel]), rel=1e-6)
            assert top.mean_activation == pytest.approx(float(means[n, top.channel]), rel=1e-4, abs=1e-6)
            assert top.contribution == pytest.approx(top.weight * top.mean_activation, rel=1e-4, abs=1e-6)


def test_unit_contributions_tensor_matches_a_loop() -> None:
    generator = torch.Generator().manual_seed(3)
    features, weight = torch.randn(2, 4, 3, 3, generator=generator), torch.randn(5, 4, generator=generator)
    classes = torch.tensor([[1, 4], [0, 0]])
    parts = unit_contributions(features, weight, classes)
    for n in range(2):
        for j in range(2):
            for k in range(4):
                expected = weight[classes[n, j], k] * features[n, k].mean()
                assert float(parts[n, j, k]) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("arch", list(NO_HEAD_FAMILIES))
def test_models_without_a_gap_head_are_refused_with_a_pointer_to_gradcam(
    arch: str, random_model: Builder
) -> None:
    size, layer = NO_HEAD_FAMILIES[arch]
    model = random_model(arch)
    images = _images(size)
    with pytest.raises(ModelError, match=r"no global-average-pooling \+ linear head.*--method gradcam"):
        class_activation_maps(model, images, topk=1)
    assert gradcam_layer(model, images[:1]) == (layer, False)
    assert _no_hooks(model)


@pytest.mark.parametrize("arch", list(NO_HEAD_FAMILIES))
def test_gradcam_matches_a_hand_written_reference(arch: str, random_model: Builder) -> None:
    size, layer = NO_HEAD_FAMILIES[arch]
    model = random_model(arch)
    images = _images(size)
    result = grad_cams(model, images, topk=2)
    module = resolve_layer(model, layer)
    kept: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        out.retain_grad()
        kept["a"] = out

    for j in range(2):
        handle = module.register_forward_hook(hook)
        try:
            logits = model(images)
            logits.gather(1, result.classes[:, j : j + 1]).sum().backward()
        finally:
            handle.remove()
            model.zero_grad(set_to_none=True)
        activation, gradient = kept["a"].detach(), kept["a"].grad
        for n in range(images.shape[0]):
            alpha = gradient[n].mean(dim=(1, 2))
            reference = torch.relu(sum(alpha[k] * activation[n, k] for k in range(activation.shape[1])))
            scale = float(reference.abs().max()) + 1e-12
            assert torch.allclose(result.maps[n, j], reference, rtol=1e-4, atol=1e-5 * scale)
    assert _no_hooks(model)


def test_batched_classes_per_image_equal_one_image_at_a_time(random_model: Builder) -> None:
    model = random_model("resnet18")
    images = _images(64, n=3)
    batched = class_activation_maps(model, images, classes=[5, 0, 999])
    for n, c in enumerate([5, 0, 999]):
        single = class_activation_maps(model, images[n : n + 1], classes=c)
        assert torch.allclose(batched.maps[n], single.maps[0], rtol=1e-4, atol=1e-5)
    several = class_activation_maps(model, images, classes=[[1, 2], [3, 4], [5, 6]])
    assert several.maps.shape[:2] == (3, 2)
    assert several.classes.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_bad_class_indices_and_inputs_raise_clear_errors(random_model: Builder) -> None:
    model = random_model("toy")
    images = _images(32)
    with pytest.raises(ClassIndexError, match="class index 10 is out of range: the model has 10 classes"):
        class_activation_maps(model, images, classes=10)
    with pytest.raises(ClassIndexError, match="class index -1"):
        grad_cams(model, images, classes=[-1, 0])
    with pytest.raises(ClassIndexError, match="topk must be between 1 and 10"):
        class_activation_maps(model, images, topk=11)
    with pytest.raises(ClassIndexError, match="for each of the 2 images"):
        class_activation_maps(model, images, classes=[1, 2, 3])
    with pytest.raises(DissectionError, match="N x 3 x H x W"):
        class_activation_maps(model, images[0], topk=1)
    assert _no_hooks(model)


def test_a_model_without_a_convolutional_feature_map_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    images = _images(8)
    assert inspect_model(model, images[:1]).no_head_reason == "no layer outputs an N x C x H x W feature map"
    with pytest.raises(ModelError, match="no layer outputs an N x C x H x W feature map"):
        class_activation_maps(model, images, topk=1)
    with pytest.raises(LayerError, match="Grad-CAM needs a convolutional feature map"):
        grad_cams(model, images, topk=1)
    assert _no_hooks(model)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_torchscript_models_are_refused(random_model: Builder) -> None:
    scripted = torch.jit.trace(random_model("toy"), _images(32, 1))
    with pytest.raises(ModelError, match="TorchScript"):
        class_activation_maps(scripted, _images(32), topk=1)


class _Exploding(nn.Module):
    """A GAP + linear net whose forward raises after the feature map when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.explode = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        if self.explode:
            raise RuntimeError("boom")
        return self.fc(f.mean(dim=(2, 3)))


def test_hooks_are_removed_when_the_forward_raises() -> None:
    model = _Exploding().eval()
    images = _images(8)
    head = detect_gap_head(model, images[:1])
    assert head == GapHead("conv", "fc", relu=False)
    model.explode = True
    for call in (
        lambda: detect_gap_head(model, images[:1]),
        lambda: class_activation_maps(model, images, topk=1, head=head),
        lambda: grad_cams(model, images, topk=1, layer="conv"),
        lambda: explain_predictions(model, images, topk=1, head=head),
    ):
        with pytest.raises(RuntimeError, match="boom"):
            call()
        assert _no_hooks(model)


def test_gradcam_on_a_layer_with_an_in_place_op_after_it_keeps_the_layer_output(
    random_model: Builder,
) -> None:
    model = random_model("resnet18")
    images = _images(64)
    # layer4.1.bn2 is followed by `out += identity` and an in-place ReLU inside the block.
    result = grad_cams(model, images, topk=1, layer="layer4.1.bn2")
    assert result.maps.shape == (2, 1, 2, 2)
    assert torch.isfinite(result.maps).all()
    assert _no_hooks(model)
