"""Benchmark: a full dissection against a forward-only pass, in one process, on the same images and batches.

resnet18 (random weights, no download) layer4 at 224 px on a synthetic Broden set of 224-px images (masks
112 px). Prints images/s of the forward-only pass and of the full dissection (one forward with the activation
cache and threshold candidates, thresholds, the tally from the cache, labels), their ratio, the tile/strip/
report rendering time separately, and peak RSS. Target: ratio >= 0.8. The two passes are interleaved and
repeated (--repeats) and the best of each is reported, since other processes share the CPU.

    .venv/bin/python bench/dissect.py [--images 192] [--batch-size 32] [--workers N] [--device auto]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dissection.broden import load_probe_set
from dissection.data import default_workers, image_batches
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.networks import load_model
from dissection.results import finalize, write_layer
from dissection.scan import scan
from dissection.sources import ModelActivations, cached_activations, resolve_device
from dissection.synth import make_probe_set
from dissection.tally import tally

LAYER = "layer4"


def forward_only(model: torch.nn.Module, probe, batch_size: int, workers: int, device: torch.device) -> float:
    """Seconds for decoding + normalizing + a plain forward of every image (no hooks, nothing kept)."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    start = time.perf_counter()
    with torch.no_grad():
        for _, pixels in image_batches(probe, range(len(probe)), batch_size=batch_size, workers=workers):
            model((pixels.to(device) - mean) / std)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def full_dissection(model, probe, batch_size: int, workers: int, device: str, cache: Path):
    """Seconds for scan (+cache) -> thresholds -> tally -> finalize, seconds of the scan alone, the result
    and its map source."""
    start = time.perf_counter()
    source = ModelActivations(model, [LAYER], device=device, workers=workers)
    state = scan(source, probe, batch_size=batch_size, cache_dir=cache)[LAYER]
    scan_s = time.perf_counter() - start
    cached = cached_activations(cache, LAYER, probe, device=device)
    counts = tally(cached, probe, {LAYER: state.thresholds("paper")}, batch_size=batch_size, workers=workers)
    result = finalize(probe, state, counts[LAYER])
    if resolve_device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, scan_s, result, cached


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--repeats", type=int, default=2, help="interleaved runs of each; the best is reported"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)

    with tempfile.TemporaryDirectory(prefix="bench-dissect-") as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        probe = load_probe_set(make_probe_set(tmp_path / "probe", images=args.images, size=224, seed=0))
        print(
            f"synthetic probe set: {args.images} images of 224 px, masks 112 px "
            f"({time.perf_counter() - start:.1f} s to write)"
        )
        torch.manual_seed(0)
        model = load_model("resnet18").to(device)
        print(
            f"resnet18 (random weights) {LAYER}, batch {args.batch_size}, {args.workers} decoding workers, "
            f"device {device}, {torch.get_num_threads()} torch threads"
        )
        warm = load_probe_set(make_probe_set(tmp_path / "warm", images=args.batch_size, size=224, seed=1))
        forward_only(model, warm, args.batch_size, args.workers, device)

        forward_runs, full_runs, scan_runs = [], [], []
        for run in range(args.repeats):
            forward_runs.append(forward_only(model, probe, args.batch_size, args.workers, device))
            if run == 0:
                forward_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            full_s, scan_s, result, cached = full_dissection(
                model, probe, args.batch_size, args.workers, str(device), tmp_path / f"cache{run}"
            )
            full_runs.append(full_s)
            scan_runs.append(scan_s)
        best = min(range(args.repeats), key=full_runs.__getitem__)
        forward_s, full_s, scan_s = min(forward_runs), full_runs[best], scan_runs[best]
        forward_rate, full_rate = args.images / forward_s, args.images / full_s
        interpretable = sum(unit.interpretable for unit in result.units)

        start = time.perf_counter()
        write_layer(result, probe, tmp_path / "out" / LAYER, cached.maps)
        render_s = time.perf_counter() - start

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"runs (s), interleaved: forward {', '.join(f'{t:.1f}' for t in forward_runs)}; "
        f"full {', '.join(f'{t:.1f}' for t in full_runs)}; best of each below"
    )
    print(f"forward only:        {forward_rate:7.1f} images/s ({forward_s:.1f} s)")
    print(
        f"full dissection:     {full_rate:7.1f} images/s ({full_s:.1f} s; forward + tally, "
        f"{interpretable}/{len(result.units)} units interpretable)"
    )
    print(
        f"  of which scan:     {scan_s:7.1f} s (forward, threshold candidates, top images, activation "
        f"cache); tally {full_s - scan_s:.1f} s"
    )
    print(f"ratio full/forward:  {full_rate / forward_rate:7.2f}   (target >= 0.80)")
    print(f"tiles+strips+report: {render_s:7.1f} s for {len(result.units)} units x {result.topk} images")
    print(
        f"peak RSS:            {own:7.0f} MiB (main process; {forward_rss:.0f} MiB after the first "
        f"forward-only pass), {children:.0f} MiB (largest worker)"
    )


if __name__ == "__main__":
    main()
