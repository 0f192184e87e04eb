"""Generator dissection: one engine, two label sources (a generator's samples labelled in memory by a
segmenter give the numbers a Broden set of the same images, labels and activations gives); a hand-built
generator whose unit 3 draws trees is found, removed and inserted; bad inputs are refused by name."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dissection.convert.segment import Segmenter, SegmenterClass
from dissection.errors import LayerError, ModelError
from dissection.gan.dissect import concept_ranking, dissect_generator, read_gan_document
from dissection.gan.effects import Estimate, causal_effects, set_sizes
from dissection.gan.models import Generator
from dissection.gan.samples import GeneratedSamples, generate_samples, generated_samples
from dissection.pipeline import dissect
from dissection.scan import scan
from dissection.sources import cached_activations
from dissection.states import ScanState
from dissection.tally import tally

from .conftest import write_broden

# TorchScript generators are a subject here; torch 2.14 marks TorchScript deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

TREE_CHANNEL = 2  # unit 3


class HandUnits(nn.Module):
    """Latent (N x 2) → N x 4 x 4 x 4: channel 0 is constant, 1 is z1 everywhere, 2 (the tree unit) is z0
    in the top-left quarter when z0 > 1.5 and 0 elsewhere, 3 is a fixed ramp over the positions."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        maps = torch.zeros(n, 4, 4, 4)
        maps[:, 0] = 1.0
        maps[:, 1] = z[:, 1, None, None]
        tree = torch.where(z[:, 0] > 1.5, z[:, 0], torch.zeros_like(z[:, 0]))
        maps[:, 2, 0:2, 0:2] = tree[:, None, None]  # TREE_CHANNEL, literal for TorchScript
        maps[:, 3] = torch.arange(16, dtype=torch.float32).view(4, 4)
        return maps


class HandRender(nn.Module):
    """Unit maps → 16 x 16 images in [-1, 1]: red where the tree unit is positive (each cell 4 x 4 px)."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        up = maps.repeat_interleave(4, 2).repeat_interleave(4, 3)
        red = (up[:, 2] > 0.5).float()  # TREE_CHANNEL
        green = torch.sigmoid(up[:, 1])
        return torch.stack([red, green, torch.zeros_like(red)], 1) * 2.0 - 1.0


class HandGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.units = HandUnits()
        self.render = HandRender()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.render(self.units(z))


class RedSegmenter(nn.Module):
    """Exact: a pixel is a tree when its red value is above one half (logit 40 (r - 1/2) against 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.zeros_like(x[:, 0]), 40.0 * (x[:, 0] - 0.5)], 1)


def hand_generator() -> Generator:
    return Generator(HandGenerator(), latent_shape=(2,), where="hand.pt", device="cpu")


def red_segmenter(mask_size: tuple[int, int] = (16, 16)) -> Segmenter:
    classes = [SegmenterClass("nothing", None), SegmenterClass("tree", "object")]
    return Segmenter(
        RedSegmenter(), classes, mask_size=mask_size, mean=(0, 0, 0), std=(1, 1, 1), device="cpu"
    )


def test_samples_are_reproducible_one_by_one_from_seed_and_index() -> None:
    generator = hand_generator()
    batch = generator.latents(7, np.arange(6))
    assert torch.equal(generator.latents(7, [4, 1]), batch[[4, 1]])
    assert not torch.equal(generator.latents(8, [4]), batch[[4]])


def test_a_hand_built_tree_unit_is_found_removed_and_inserted(tmp_path: Path) -> None:
    generator, segmenter = hand_generator(), red_segmenter()
    folder = dissect_generator(generator, segmenter, tmp_path, layers=["units"], samples=300, seed=0)["units"]
    result = json.loads((folder / "result.json").read_text())
    tree_unit = result["units"][TREE_CHANNEL]
    assert (tree_unit["unit"], tree_unit["label"], tree_unit["category"]) == (3, "tree", "object")
    assert tree_unit["iou"] > 0.2 and tree_unit["interpretable"]
    document = read_gan_document(folder)
    entry, ranking = concept_ranking(document, "tree")
    assert ranking[0] == TREE_CHANNEL
    assert max(v for c, v in enumerate(entry["iou"]) if c != TREE_CHANNEL) < 0.05
    assert (folder / "report.html").is_file() and (folder / "tally.csv").is_file()

    region = (0.5, 0.5, 1.0, 1.0)  # the bottom-right quarter, where the unit never draws
    effects, images = causal_effects(
        generator,
        segmenter,
        layer="units",
        concept=entry,
        ranking=ranking,
        samples=120,
        seed=3,
        limit=1,
        controls=2,
        region=region,
    )
    (curve,) = effects["curves"]
    latents = generator.latents(3, np.arange(120))
    trees = latents[:, 0] > 1.5
    share = trees.double() * 0.25  # a tree sample's top-left quarter is red
    assert effects["samples_with_concept"] == int(trees.sum()) > 0
    assert curve["channels"] == [TREE_CHANNEL]
    assert curve["ablation"]["mean"] == pytest.approx(float(share.mean()))  # every tree pixel removed
    assert curve["insertion"]["mean"] == 1.0 and curve["insertion"]["samples"] == 120  # the whole region
    inserted_value = float(latents[trees, 0].double().mean())  # the unit's mean where trees are
    assert effects["insertion_values"] == [pytest.approx(inserted_value)]
    # where the unit draws nothing: after removal no red anywhere; after insertion red exactly in the region
    assert float(images["ablation_after"][:, 0].max()) == 0.0
    inserted = images["insertion_after"][:, 0]
    assert bool((inserted[:, 8:, 8:] == 1).all()) and float(inserted[:, :8, :].max()) <= float(
        images["insertion_before"][:, 0, :8, :].max()
    )


def test_generator_dissection_equals_classifier_dissection_on_the_same_activations_and_labels(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1),  # "0": 6 units of 3 x 3
        nn.Upsample(scale_factor=4),
        nn.Conv2d(6, 3, 3, padding=1),
        nn.Tanh(),
    )
    generator = Generator(model, latent_shape=(4, 3, 3), where="random.pt", device="cpu")
    classes = [
        SegmenterClass("nothing", None),
        SegmenterClass("red", "color"),
        SegmenterClass("blob", "object"),
    ]

    class Segment(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x[:, 2], x[:, 0], x[:, 1]], 1) * 8.0

    segmenter = Segmenter(
        Segment(),
        classes,
        mask_size=(6, 6),
        thresholds=(0.0, 0.6),
        mean=(0, 0, 0),
        std=(1, 1, 1),
        device="cpu",
    )
    samples, seed = 60, 5
    gan = dissect_generator(generator, segmenter, tmp_path / "gan", layers=["0"], samples=samples, seed=seed)[
        "0"
    ]

    # The same samples the classifier way: label PNGs and an .npy of the layer's activations.
    pixels, recorded = generator.run(generator.latents(seed, np.arange(samples)), record=["0"])
    np.save(tmp_path / "acts.npy", recorded["0"].numpy())
    label_layers = segmenter.layers(pixels)
    names = [label.name for label in segmenter.labels]
    probe = write_broden(
        tmp_path / "probe",
        labels=[(label.number, label.name, label.category) for label in segmenter.labels],
        images=[{"color": [layers[0], layers[1]]} for layers in label_layers],
        image_size=12,
        mask_size=6,
        categories=("color", "object"),
        coverage={(label.number, label.category): 1.0 for label in segmenter.labels},
    )
    classic = dissect(
        probe, tmp_path / "classic", layers=["0"], activations=tmp_path / "acts.npy", workers=0
    )["0"]

    def rows(folder: Path) -> list[list[str]]:
        with (folder / "tally.csv").open(newline="") as handle:
            return list(csv.reader(handle))

    assert rows(gan) == rows(classic)
    assert len(rows(gan)) == 7 and any(float(row[3]) > 0 for row in rows(gan)[1:])
    ours, theirs = (json.loads((f / "result.json").read_text()) for f in (gan, classic))
    for a, b in zip(ours["units"], theirs["units"], strict=True):
        assert (a["threshold"], a["label"], a["iou"], a["concepts"]) == (
            b["threshold"],
            b["label"],
            b["iou"],
            b["concepts"],
        )
        assert [(i["index"], i["activation"]) for i in a["images"]] == [
            (i["index"], i["activation"]) for i in b["images"]
        ]
    assert ours["summary"] == theirs["summary"] and set(names) >= {"red@0", "blob@0.6"}


def test_bad_generators_segmenters_and_layers_are_refused_by_name(tmp_path: Path) -> None:
    class Flat(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z.repeat(1, 48).view(-1, 1, 8, 12)

    flat = Generator(nn.Sequential(Flat()), latent_shape=(2,), where="flat.pt", device="cpu")
    with pytest.raises(
        ModelError, match=r"generator flat\.pt outputs \(1, 1, 8, 12\) for 1 latents; .* N x 3 x H x W"
    ):
        dissect_generator(flat, red_segmenter(), tmp_path / "a", layers=["0"], samples=4)
    with pytest.raises(LayerError, match=r"generator hand\.pt has no layer 'trunk'; valid: units, render"):
        dissect_generator(hand_generator(), red_segmenter(), tmp_path / "b", layers=["trunk"], samples=4)
    wrong = Segmenter(
        RedSegmenter(),
        [SegmenterClass("nothing", None), SegmenterClass("tree", "object"), SegmenterClass("sky", "object")],
        mask_size=(16, 16),
        device="cpu",
        where="segmenter seg.pt",
    )
    with pytest.raises(ModelError, match=r"segmenter seg\.pt outputs 2 classes but the classes file lists 3"):
        dissect_generator(hand_generator(), wrong, tmp_path / "c", layers=["units"], samples=4)
    with pytest.raises(ModelError, match=r"generator x: latent shape \(\) must be positive sizes"):
        Generator(HandGenerator(), latent_shape=(), where="x", device="cpu")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_a_torchscript_generator_is_read_child_by_child_and_refused_when_its_forward_is_not_a_sequence(
    tmp_path: Path,
) -> None:
    sequential = torch.jit.script(nn.Sequential(HandUnits(), HandRender()))
    generator = Generator(sequential, latent_shape=(2,), where="seq.pt", device="cpu")
    pixels, recorded = generator.run(generator.latents(0, range(5)), record=["0"])
    eager_pixels, eager = hand_generator().run(generator.latents(0, range(5)), record=["units"])
    assert torch.equal(pixels, eager_pixels) and torch.equal(recorded["0"], eager["units"])
    with pytest.raises(LayerError, match=r"generator seq\.pt has no top-level child .*'units'"):
        generator.check_layers(["units"])

    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.units = HandUnits()
            self.render = HandRender()

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return -self.render(self.units(z))

    skipping = Generator(torch.jit.script(Skip()), latent_shape=(2,), where="skip.pt", device="cpu")
    with pytest.raises(ModelError, match=r"TorchScript generator skip\.pt: its forward is not its children"):
        skipping.run(skipping.latents(0, [0, 1]), record=["units"])


def test_the_confidence_interval_is_the_normal_one_over_samples() -> None:
    values = np.array([0.1, 0.4, 0.0, 0.25, 0.3])
    estimate = Estimate.of(values)
    half = 1.959963984540054 * statistics.stdev(values.tolist()) / len(values) ** 0.5
    assert estimate.mean == pytest.approx(statistics.fmean(values.tolist()))
    assert estimate.low == pytest.approx(estimate.mean - half)
    assert estimate.high == pytest.approx(estimate.mean + half)
    assert set_sizes(16, 12) == [1, 2, 4, 8] and set_sizes(3, 64) == [1, 2]


def test_shards_of_the_samples_merge_into_the_whole_dissection(tmp_path: Path) -> None:
    generator, segmenter = hand_generator(), red_segmenter()

    def states(rows: np.ndarray, probe: GeneratedSamples, name: str) -> tuple[ScanState, np.ndarray]:
        generate_samples(
            generator, segmenter, probe, seed=2, layers=["units"], cache_dir=tmp_path / name, indices=rows
        )
        return scan(cached_activations(tmp_path / name, "units", probe, device="cpu"), probe, rows)[
            "units"
        ], rows

    whole_probe = generated_samples(tmp_path, 200, segmenter, (16, 16))
    whole, _ = states(np.arange(200), whole_probe, "whole")
    sharded = generated_samples(
        tmp_path, 200, segmenter, (16, 16)
    )  # a fresh process's view: nothing generated
    shards = [
        states(rows, sharded, f"shard{i}") for i, rows in enumerate((np.arange(120, 200), np.arange(120)))
    ]
    merged = shards[0][0].merge(shards[1][0])
    thresholds = whole.thresholds()
    assert np.array_equal(merged.thresholds(), thresholds)
    assert np.array_equal(merged.top_images, whole.top_images)
    tallies = [
        tally(
            cached_activations(tmp_path / f"shard{i}", "units", sharded, device="cpu"),
            sharded,
            {"units": thresholds},
            rows,
            workers=0,
        )["units"]
        for i, (_, rows) in enumerate(shards)
    ]
    full = tally(
        cached_activations(tmp_path / "whole", "units", whole_probe, device="cpu"),
        whole_probe,
        {"units": thresholds},
        workers=0,
    )["units"]
    summed = tallies[0].merge(tallies[1])
    assert np.array_equal(summed.intersect, full.intersect) and np.array_equal(summed.truth, full.truth)
    assert np.array_equal(summed.activation, full.activation) and int(full.intersect[TREE_CHANNEL, 1]) > 0
