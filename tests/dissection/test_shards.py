"""Shard states: merging the passes over slices of the probe set gives exactly the one-pass result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dissection.broden import load_probe_set
from dissection.errors import DissectionError
from dissection.networks import ToyNet
from dissection.results import finalize
from dissection.scan import scan
from dissection.sources import ArrayActivations, ModelActivations
from dissection.states import ScanState, TallyState
from dissection.tally import tally


def _assert_scan_equal(a: ScanState, b: ScanState) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.candidates, b.candidates)
    np.testing.assert_array_equal(a.top_values, b.top_values)
    np.testing.assert_array_equal(a.top_images, b.top_images)


def _assert_tally_equal(a: TallyState, b: TallyState) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.intersect, b.intersect)
    np.testing.assert_array_equal(a.truth, b.truth)
    np.testing.assert_array_equal(a.activation, b.activation)


@pytest.fixture(scope="module")
def random_toy() -> ToyNet:
    torch.manual_seed(0)
    return ToyNet(num_classes=5, width=8).eval()


def test_model_shards_merge_to_the_single_pass(probe_set_dir, random_toy, tmp_path):
    probe = load_probe_set(probe_set_dir)
    source = ModelActivations(random_toy, ["conv3", "conv4"], device="cpu", workers=0)
    whole = scan(source, probe, batch_size=32)
    shards = [np.arange(0, 64), np.arange(64, 128), np.arange(128, len(probe))]  # same batches as one pass
    parts = [scan(source, probe, shard, batch_size=32) for shard in shards]
    for layer in ("conv3", "conv4"):
        for i, part in enumerate(parts):
            part[layer].save(tmp_path / f"scan-{layer}-{i}.npz")
        loaded = [ScanState.load(tmp_path / f"scan-{layer}-{i}.npz") for i in range(3)]
        left = loaded[0].merge(loaded[1]).merge(loaded[2])
        right = loaded[0].merge(loaded[1].merge(loaded[2]))
        _assert_scan_equal(left, whole[layer])
        _assert_scan_equal(right, whole[layer])
    thresholds = {layer: state.thresholds("paper") for layer, state in whole.items()}
    one = tally(source, probe, thresholds, batch_size=32, workers=0)
    pieces = [tally(source, probe, thresholds, shard, batch_size=32, workers=0) for shard in shards]
    for layer in ("conv3", "conv4"):
        for i, piece in enumerate(pieces):
            piece[layer].save(tmp_path / f"tally-{layer}-{i}.npz")
        loaded = [TallyState.load(tmp_path / f"tally-{layer}-{i}.npz") for i in range(3)]
        merged = loaded[2].merge(loaded[0]).merge(loaded[1])
        _assert_tally_equal(merged, one[layer])
        a = finalize(probe, whole[layer], merged)
        b = finalize(probe, whole[layer], one[layer])
        assert a.units == b.units


@pytest.mark.parametrize("semantics", ["paper", "netdissect-lite"])
def test_any_subsets_merge_exactly(probe_set_dir, tmp_path, semantics):
    probe = load_probe_set(probe_set_dir)
    rng = np.random.default_rng(1)
    acts = rng.gamma(1.0, size=(len(probe), 5, 4, 4)).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    source = ArrayActivations(tmp_path / "acts.npy", "L", probe, device="cpu")
    order = rng.permutation(len(probe))
    shards = [np.sort(order[:17]), order[17:90], order[90:]]
    whole = scan(source, probe, batch_size=16)["L"]
    merged = scan(source, probe, shards[1], batch_size=5)["L"]
    merged = merged.merge(scan(source, probe, shards[0], topk=20)["L"])
    with pytest.raises(DissectionError, match="need all 160 images"):
        merged.thresholds(semantics)
    merged = merged.merge(scan(source, probe, shards[2], batch_size=64)["L"])
    _assert_scan_equal(merged, whole)
    thresholds = {"L": whole.thresholds(semantics)}
    one = tally(source, probe, thresholds, semantics=semantics, batch_size=16, workers=0)["L"]
    parts = [
        tally(source, probe, thresholds, shard, semantics=semantics, batch_size=9, workers=0)["L"]
        for shard in shards
    ]
    _assert_tally_equal(parts[0].merge(parts[1].merge(parts[2])), one)


def test_overlapping_or_foreign_states_do_not_merge(probe_set_dir, tmp_path):
    probe = load_probe_set(probe_set_dir)
    acts = np.random.default_rng(2).normal(size=(len(probe), 3, 2, 2)).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    source = ArrayActivations(tmp_path / "acts.npy", "L", probe, device="cpu")
    a = scan(source, probe, np.arange(0, 10))["L"]
    b = scan(source, probe, np.arange(5, 15))["L"]
    with pytest.raises(DissectionError, match="share images"):
        a.merge(b)
    thresholds = {"L": np.zeros(3)}
    ta = tally(source, probe, thresholds, np.arange(0, 10), workers=0)["L"]
    tb = tally(source, probe, {"L": np.ones(3)}, np.arange(10, 20), workers=0)["L"]
    with pytest.raises(DissectionError, match="different runs or thresholds"):
        ta.merge(tb)
    a.save(tmp_path / "scan.npz")
    with pytest.raises(DissectionError, match="not a tally"):
        TallyState.load(tmp_path / "scan.npz")


def test_sharded_outputs_with_model_maps_match_dissect(probe_set_dir, random_toy, tmp_path):
    from dissection.pipeline import dissect
    from dissection.results import write_layer
    from dissection.sources import model_maps

    probe = load_probe_set(probe_set_dir)
    source = ModelActivations(random_toy, ["conv4"], device="cpu", workers=0)
    shards = [np.arange(0, 96), np.arange(96, len(probe))]
    scans = [scan(source, probe, shard, topk=3)["conv4"] for shard in shards]
    merged = scans[0].merge(scans[1])
    thresholds = {"conv4": merged.thresholds()}
    tallies = [tally(source, probe, thresholds, shard, workers=0)["conv4"] for shard in shards]
    result = finalize(probe, merged, tallies[0].merge(tallies[1]))
    sharded = write_layer(result, probe, tmp_path / "sharded" / "conv4", model_maps(source, probe, "conv4"))
    single = dissect(
        probe_set_dir,
        tmp_path / "single",
        layers=["conv4"],
        model=random_toy,
        topk=3,
        workers=0,
        device="cpu",
    )["conv4"]
    assert (sharded / "tally.csv").read_text() == (single / "tally.csv").read_text()
    assert (sharded / "report.html").is_file() and (sharded / "strips" / "unit_0001.jpg").is_file()
