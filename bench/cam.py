"""Benchmark: CAM for a batch against a forward-only pass, in one process, on the same input batches.

resnet18 (random weights, no download) at 224 px. CAM is one forward pass with a hook on the feature layer
plus one batched matrix product, so its images/s should stay close to a plain forward (target: ratio >= 0.9).
Rounds alternate forward-only, CAM and Grad-CAM so machine load hits both alike; the median round of each is
reported. Grad-CAM (forward + backward) is timed too, for reference.

    .venv/bin/python bench/cam.py [--model resnet18] [--size 224] [--batch-size 16]
                                  [--rounds 5] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dissection.cam.gradcam import grad_cams, gradcam_layer
from dissection.cam.heads import detect_gap_head
from dissection.cam.maps import class_activation_maps
from dissection.networks import load_model


def _timed(step: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=2, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)

    torch.manual_seed(0)
    model = load_model(args.model).to(device)
    shape = (args.batch_size, 3, args.size, args.size)
    batches = [torch.randn(shape, device=device) for _ in range(args.batches)]
    head = detect_gap_head(model, batches[0][:1])
    layer, relu = gradcam_layer(model, batches[0][:1])

    def forward() -> None:
        with torch.no_grad():
            for batch in batches:
                model(batch)

    def cam() -> None:
        for batch in batches:
            class_activation_maps(model, batch, topk=1, head=head)

    def gradcam() -> None:
        for batch in batches:
            grad_cams(model, batch, topk=1, layer=layer, relu=relu)

    forward()
    cam()  # warm-up
    images = args.batch_size * args.batches
    rates: dict[str, list[float]] = {"forward": [], "cam": [], "gradcam": []}
    for _ in range(args.rounds):
        rates["forward"].append(images / _timed(forward, device))
        rates["cam"].append(images / _timed(cam, device))
        rates["gradcam"].append(images / _timed(gradcam, device))
    median = {name: statistics.median(values) for name, values in rates.items()}

    print(
        f"{args.model} random weights, {args.size} px, batch {args.batch_size}, {args.rounds} rounds of "
        f"{images} images on {device} ({torch.get_num_threads()} threads); "
        f"CAM layer {head.feature_layer!r}"
    )
    print(f"forward only   {median['forward']:8.1f} images/s")
    print(f"CAM (top-1)    {median['cam']:8.1f} images/s")
    print(f"Grad-CAM       {median['gradcam']:8.1f} images/s")
    print(f"CAM / forward  {median['cam'] / median['forward']:8.3f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
