"""The engine agrees with a slow reference written from the definitions (plain NumPy, per image, per unit),
on random activations with planted detectors, in both semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dissection.broden import load_probe_set
from dissection.results import finalize
from dissection.scan import scan
from dissection.sources import ArrayActivations
from dissection.tally import tally

LABELS = [
    (1, "red-c", "color"),
    (2, "blue-c", "color"),
    (3, "cat", "object"),
    (4, "dog", "object"),
    (5, "ear", "part"),
    (6, "nose", "part"),
    (7, "wood", "material"),
    (8, "beach-s", "scene"),
    (9, "room-s", "scene"),
    (300, "dotted", "texture"),
]
N, UNITS, MAP, MASK = 30, 6, 4, 16


def _random_set(rng: np.random.Generator):
    images, layers_per_image, scalars_per_image = [], [], []
    for _ in range(N):
        cells: dict[str, list] = {}
        layers, scalars = [], []
        if rng.random() < 0.8:
            color = rng.choice([0, 1, 2], size=(MASK // 4, MASK // 4)).repeat(4, 0).repeat(4, 1)
            cells["color"] = [color]
            layers.append(color)
        y, x = rng.integers(0, MASK - 6, 2)
        h, w = rng.integers(3, 7, 2)
        obj = np.zeros((MASK, MASK), int)
        obj[y : y + h, x : x + w] = rng.choice([3, 4])
        cells["object"] = [obj]
        layers.append(obj)
        if rng.random() < 0.7:
            ear = np.where(obj > 0, 5, 0)
            ear[y + 1 :, :] = 0
            nose = np.zeros_like(obj)
            nose[y + h - 1, x : x + 2] = 6
            cells["part"] = [ear, nose] if rng.random() < 0.5 else [ear]
            layers += cells["part"]
        if rng.random() < 0.5:
            wood = np.zeros((MASK, MASK), int)
            wood[12:, :] = 7
            wood[obj > 0] = 0
            cells["material"] = [wood]
            layers.append(wood)
        if rng.random() < 0.6:
            scene = int(rng.choice([8, 9]))
            cells["scene"] = [scene]
            scalars.append(scene)
        if rng.random() < 0.4:
            cells["texture"] = [300]
            scalars.append(300)
        images.append(cells)
        layers_per_image.append(layers)
        scalars_per_image.append(scalars)
    return images, layers_per_image, scalars_per_image


def _planted_activations(rng, layers_per_image, scalars_per_image, kind):
    """Dyadic values (multiples of 1/8, many ties) or continuous ones, with planted detectors."""
    if kind == "dyadic":
        acts = rng.integers(0, 8, size=(N, UNITS, MAP, MAP)).astype(np.float32) / 8
    else:
        acts = rng.random(size=(N, UNITS, MAP, MAP)).astype(np.float32)
    for i, (layers, scalars) in enumerate(zip(layers_per_image, scalars_per_image, strict=True)):
        obj = layers[1] if len(layers) > 1 and layers[1].max() in (3, 4) else layers[0]
        at_map = obj[2::4, 2::4]
        acts[i, 0] += np.where(at_map == 3, 6.0, 0.0)  # a cat detector
        acts[i, 1] += np.where(at_map > 0, 4.0, 0.0)  # an any-object detector
        if 8 in scalars:
            acts[i, 2] += 3.0  # a beach scene unit
    acts[:, 3] = 0.0  # a unit that never fires
    return acts


@pytest.mark.parametrize("kind", ["dyadic", "continuous"])
@pytest.mark.parametrize("semantics", ["paper", "netdissect-lite"])
def test_engine_matches_reference(tmp_path, make_broden, reference, semantics, kind):
    rng = np.random.default_rng(3)
    images, layers_per_image, scalars_per_image = _random_set(rng)
    root = make_broden(tmp_path / "set", labels=LABELS, images=images, image_size=32, mask_size=MASK)
    acts = _planted_activations(rng, layers_per_image, scalars_per_image, kind)
    np.save(tmp_path / "acts.npy", acts)
    probe = load_probe_set(root)
    source = ArrayActivations(tmp_path / "acts.npy", "L", probe, device="cpu")
    state = scan(source, probe, batch_size=7)["L"]
    thresholds = state.thresholds(semantics)
    counts = tally(source, probe, {"L": thresholds}, semantics=semantics, batch_size=5, workers=0)["L"]
    result = finalize(probe, state, counts)

    category = {n: ["color", "object", "part", "material", "scene", "texture"].index(c) for n, _, c in LABELS}
    expected = reference(acts, layers_per_image, scalars_per_image, category, 6, semantics)
    np.testing.assert_allclose(thresholds, expected["thresholds"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(counts.intersect, expected["intersect"])
    np.testing.assert_array_equal(counts.truth, expected["truth"])
    np.testing.assert_array_equal(counts.activation, expected["activation"])
    np.testing.assert_allclose(result.iou, expected["iou"], rtol=0, atol=1e-6)
    assert result.units[3].iou == 0.0 and not result.units[3].interpretable  # never fires
    if kind == "dyadic":  # the planted cat detector (its ears are the cat's top row)
        assert result.units[0].label in {"cat", "ear"} and result.units[0].iou > 0


def test_reference_bilinear_is_torch_interpolate(bilinear_reference):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 7))
    for size in [(16, 16), (11, 23), (5, 7), (3, 4)]:
        ours = bilinear_reference(a, *size)
        theirs = F.interpolate(
            torch.from_numpy(a)[None, None], size=size, mode="bilinear", align_corners=False
        )
        np.testing.assert_allclose(ours, theirs[0, 0].numpy(), atol=1e-12)


@pytest.mark.parametrize("semantics", ["paper", "netdissect-lite"])
@pytest.mark.parametrize("n", [1, 2, 7, 99, 100, 101, 199, 200, 201, 1000, 4321])
def test_thresholds_are_numpys_quantile(semantics, n):
    from dissection.quantile import candidates_needed, quantile_from_top

    rng = np.random.default_rng(n)
    values = rng.normal(size=(3, n)).astype(np.float32)
    values[2] = np.round(values[2])  # ties
    top = -np.sort(-values, 1)[:, : candidates_needed(n)]
    q, method = (0.995, "linear") if semantics == "paper" else (994 / 999, "hazen")
    expected = np.quantile(values.astype(np.float64), q, axis=1, method=method)
    np.testing.assert_allclose(quantile_from_top(top, n, semantics), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "size_in,size_out",
    [((7, 7), (112, 112)), ((4, 6), (16, 9)), ((64, 48), (32, 32)), ((5, 5), (5, 5)), ((1, 3), (4, 7))],
)
def test_mask_pixels_are_the_definitions(size_in, size_out, bilinear_reference):
    """The windowed float64 upsampling finds exactly the pixels where the reference bilinear map > T."""
    from dissection.masks import bilinear_axis, mask_pixels
    from dissection.quantile import float32_below

    maps = torch.randn((4, *size_in), generator=torch.Generator().manual_seed(0))
    t64 = np.quantile(maps.double().flatten(1).numpy(), [0.5, 0.9, 0.99, 1.0], axis=1).diagonal().copy()
    ay, ax = bilinear_axis(size_in[0], size_out[0], "cpu"), bilinear_axis(size_in[1], size_out[1], "cpu")
    p, pixel = mask_pixels(maps, torch.from_numpy(t64), torch.from_numpy(float32_below(t64)), ay, ax)
    ours = np.zeros((4, size_out[0] * size_out[1]), bool)
    ours[p.numpy(), pixel.numpy()] = True
    for i in range(4):
        expected = bilinear_reference(maps[i].double().numpy(), *size_out) > t64[i]
        np.testing.assert_array_equal(ours[i].reshape(size_out), expected)
    dense = F.interpolate(maps[:, None], size=size_out, mode="bilinear", align_corners=False)[:, 0].numpy()
    reference = np.stack([bilinear_reference(m.double().numpy(), *size_out) for m in maps])
    np.testing.assert_allclose(dense, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("labels", [5, 70])
def test_label_sets_rebuild_the_onehot(labels):
    from dissection.data import label_sets

    onehot = (np.random.default_rng(labels).random((labels, 300)) < 0.1).astype(np.uint8)
    onehot[:, :50] = onehot[:, 50:100]  # repeated sets
    sets, pixel_set = label_sets(onehot)
    assert len(np.unique(sets, axis=0)) == len(sets)
    np.testing.assert_array_equal(sets[pixel_set].T, onehot)
