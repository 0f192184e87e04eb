"""On a CUDA device the scan and the tally give the CPU's numbers bit for bit, from the same activations
(deselected where no CUDA device is available)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dissection.broden import load_probe_set
from dissection.quantile import SEMANTICS
from dissection.scan import scan
from dissection.sources import ArrayActivations
from dissection.tally import tally

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_cuda_scan_and_tally_equal_the_cpu_ones(probe_set_dir: Path, tmp_path: Path, semantics: str) -> None:
    probe = load_probe_set(probe_set_dir)
    rng = np.random.default_rng(0)
    acts = rng.gamma(1.0, 1.0, (len(probe), 24, 8, 8)).astype(np.float32)
    acts[:, :, 3:5, 2:6] += rng.gamma(2.0, 2.0, (len(probe), 24, 1, 1)).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    states = {}
    for device in ("cpu", "cuda"):
        source = ArrayActivations(tmp_path / "acts.npy", "conv", probe, device=device)
        scanned = scan(source, probe, topk=5, batch_size=16)["conv"]
        counted = tally(
            source,
            probe,
            {"conv": scanned.thresholds(semantics)},
            semantics=semantics,
            batch_size=16,
            workers=0,
        )["conv"]
        states[device] = (scanned, counted)
    (cpu_scan, cpu_tally), (gpu_scan, gpu_tally) = states["cpu"], states["cuda"]
    np.testing.assert_array_equal(gpu_scan.candidates, cpu_scan.candidates)
    np.testing.assert_array_equal(gpu_scan.top_images, cpu_scan.top_images)
    np.testing.assert_array_equal(gpu_tally.thresholds, cpu_tally.thresholds)
    for name in ("intersect", "truth", "activation"):
        np.testing.assert_array_equal(getattr(gpu_tally, name), getattr(cpu_tally, name))
    assert cpu_tally.intersect.sum() > 0
