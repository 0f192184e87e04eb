"""Helpers for the dissection and CAM tests: hand-made Broden sets, a slow reference dissection from the
definitions, and random-weight models of every torchvision family.

torchvision's default initialization with unit running variance shrinks activations layer by layer
(mobilenet_v2's logits come out near 1e-9), which would make equality checks trivially true. Calibrating the
running statistics on one random batch, with random affine parameters, gives O(1) features and logits without
any download.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dissection.networks import load_model

CATEGORIES = ("color", "object", "part", "material", "scene", "texture")


def write_broden(
    root: Path,
    *,
    labels: Sequence[tuple[int, str, str]],
    images: Sequence[dict[str, list]],
    image_size: int = 8,
    mask_size: int = 4,
    categories: Sequence[str] = CATEGORIES,
    coverage: dict[tuple[int, str], float] | None = None,
) -> Path:
    """Write a Broden set. `labels`: (number, name, category); `images`: per image a dict category -> list of
    items, each an int (image-level label) or a mask_size x mask_size int array (a PNG layer). `coverage`
    overrides c_<cat>.csv coverage per (number, category) and may list a label in several categories."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, cells in enumerate(images):
        name = f"im{i}.png"
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / name)
        row = {
            "image": name,
            "split": "train",
            "ih": image_size,
            "iw": image_size,
            "sh": mask_size,
            "sw": mask_size,
        }
        for cat in categories:
            items = []
            for j, item in enumerate(cells.get(cat, [])):
                if isinstance(item, int):
                    items.append(str(item))
                else:
                    layer = np.asarray(item, np.int64)
                    rgb = np.zeros((*layer.shape, 3), np.uint8)
                    rgb[..., 0], rgb[..., 1] = layer % 256, layer // 256
                    file_name = f"im{i}_{cat}_{j}.png"
                    Image.fromarray(rgb, "RGB").save(root / "images" / file_name)
                    items.append(file_name)
            row[cat] = ";".join(items)
        rows.append(row)
    header = ["image", "split", "ih", "iw", "sh", "sw", *categories]
    _write(root / "index.csv", header, [[row[h] for h in header] for row in rows])
    _write(
        root / "label.csv",
        ["number", "name", "category", "frequency", "coverage", "syns"],
        [[n, name, f"{cat}(1)", 1, 1.0, ""] for n, name, cat in labels],
    )
    cov = coverage or {(n, cat): 1.0 for n, _, cat in labels}
    names = {n: name for n, name, _ in labels}
    for cat in categories:
        members = sorted(n for n, c in cov if c == cat)
        _write(
            root / f"c_{cat}.csv",
            ["code", "number", "name", "frequency", "coverage"],
            [[code, n, names[n], 1, cov[(n, cat)]] for code, n in enumerate(members, start=1)],
        )
    _write(
        root / "category.csv",
        ["name", "first", "last", "count", "frequency"],
        [[cat, 0, 0, 0, 0] for cat in categories],
    )
    return root


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def bilinear(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with align_corners=False, from its definition (per output pixel, float64)."""
    h, w = a.shape
    out = np.zeros((out_h, out_w))
    for y in range(out_h):
        sy = max((y + 0.5) * h / out_h - 0.5, 0.0)
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, h - 1)
        ly = sy - y0
        for x in range(out_w):
            sx = max((x + 0.5) * w / out_w - 0.5, 0.0)
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, w - 1)
            lx = sx - x0
            out[y, x] = (1 - ly) * ((1 - lx) * a[y0, x0] + lx * a[y0, x1]) + ly * (
                (1 - lx) * a[y1, x0] + lx * a[y1, x1]
            )
    return out


def reference_dissection(
    acts: np.ndarray,
    image_layers: list[list[np.ndarray]],
    image_scalars: list[list[int]],
    label_category: dict[int, int],
    num_categories: int,
    semantics: str,
) -> dict[str, np.ndarray]:
    """Network Dissection per image and per unit, straight from the definitions in issue 3.

    Returns thresholds (K), intersect (K x L), truth (L), activation (K x C) and iou (K x L) with L = max
    label number + 1."""
    n, units, _, _ = acts.shape
    sh, sw = next(layer.shape for layers in image_layers for layer in layers)
    num_labels = max(label_category) + 1
    if semantics == "paper":
        thresholds = np.array(
            [np.quantile(acts[:, k].astype(np.float64).ravel(), 0.995) for k in range(units)]
        )
    else:
        thresholds = np.array(
            [
                np.quantile(acts[:, k].astype(np.float64).ravel(), 994 / 999, method="hazen")
                for k in range(units)
            ]
        )
    intersect = np.zeros((units, num_labels), np.int64)
    truth = np.zeros(num_labels, np.int64)
    activation = np.zeros((units, num_categories), np.int64)
    for i in range(n):
        sets: dict[int, np.ndarray] = {}
        for layer in image_layers[i]:
            for c in np.unique(layer[layer > 0]):
                sets[int(c)] = sets.get(int(c), np.zeros((sh, sw), bool)) | (layer == c)
        for c in image_scalars[i]:
            sets[c] = np.ones((sh, sw), bool)
        for c, region in sets.items():
            truth[c] += region.sum()
        present = {label_category[c] for c in sets}
        for k in range(units):
            mask = bilinear(acts[i, k].astype(np.float64), sh, sw) > thresholds[k]
            hit = set()
            for c, region in sets.items():
                overlap = int((mask & region).sum())
                intersect[k, c] += overlap
                if overlap > 0:
                    hit.add(label_category[c])
            for cat in range(num_categories):
                if (cat in present) if semantics == "paper" else (cat in hit):
                    activation[k, cat] += int(mask.sum())
    iou = np.zeros((units, num_labels))
    for k in range(units):
        for c, cat in label_category.items():
            denominator = activation[k, cat] + truth[c] - intersect[k, c]
            iou[k, c] = intersect[k, c] / denominator if denominator > 0 else 0.0
    return {
        "thresholds": thresholds,
        "intersect": intersect,
        "truth": truth,
        "activation": activation,
        "iou": iou,
    }


@pytest.fixture
def make_broden() -> Callable[..., Path]:
    return write_broden


@pytest.fixture
def reference() -> Callable[..., dict[str, np.ndarray]]:
    return reference_dissection


@pytest.fixture
def bilinear_reference() -> Callable[[np.ndarray, int, int], np.ndarray]:
    return bilinear


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
NO_HEAD_FAMILIES = {
    "alexnet": (112, "features"),
    "vgg11": (64, "features"),
    "mobilenet_v3_small": (64, "features"),
}


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
            size = {name: family[0] for name, family in [*GAP_FAMILIES.items(), *NO_HEAD_FAMILIES.items()]}
            cache[arch] = calibrated(load_model(arch), size[arch])
        return cache[arch]

    return build


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` run where a CUDA device is at hand and are deselected (not skipped) elsewhere."""
    if not any(item.get_closest_marker("cuda") for item in items) or torch.cuda.is_available():
        return
    config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("cuda")])
    items[:] = [item for item in items if not item.get_closest_marker("cuda")]
