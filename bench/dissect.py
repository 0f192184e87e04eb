"""Benchmark: `python -m dissection run` end to end, as a user runs it, against a forward-only process.

Each measurement is a whole child process timed from start to exit (imports, model, probe-set reading, the
work, writing), interleaved and repeated; the best of each is reported, since other processes share the CPU:

- **run**: `python -m dissection run --model resnet18 --layer layer4 --topk K` (scan with the activation
  cache, thresholds, tally, labels, result.json, tally.csv, maps.npy, strips and report.html);
- **forward**: this script as a child that imports the same modules, reads the same probe set, decodes every
  image with the same DataLoader workers and batch size, normalizes, and runs the same model's whole forward
  (as `run` does: its hook reads layer4 while the head runs too, under 1 % of the cost) keeping nothing. It is
  the obvious script, as a user would write it: the model as built (`run` folds each batch norm into its
  convolution and runs channels-last, `dissection.sources.ModelActivations`) and the interpreter's own exit
  (`run` freezes its objects out of the final collections, `dissection.__main__`);
- **engine**: this script as a child running scan + thresholds + tally + labels in process; it reports the
  seconds of that work alone (no imports, no writing), beside the forward child's own loop seconds.

resnet18 has random weights (torchvision's architecture, nothing downloaded); the probe set is this
repository's synthetic Broden set (`dissection.synth`) at 224 px, masks 112 px. Peak memory is each child's
RSS high-water mark (`os.wait4`; DataLoader worker processes are not included).

NetDissect-Lite's end-to-end times are recorded numbers, not measured here (its code is not in this
repository): measured on this 2-core machine in Nov 2026 by the session that filed issue 18, as whole
processes on the same kind of synthetic probe set, resnet18 layer4, batch 32, beside a forward-only process.
The ratio to Lite scales Lite's time by this run's forward-only time over that recorded one, since the VM's
speed varies from hour to hour; the ratio to the raw recorded time is printed beside it.

    .venv/bin/python bench/dissect.py [--quick] [--images 300,600] [--topk 10,40] [--repeats 3]
                                      [--device cpu|cuda|auto] [--arch resnet18]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYER = "layer4"
# (images, top-k) -> seconds, NetDissect-Lite end to end (recorded Nov 2026 on this machine, issue 18), and
# the forward-only process measured beside it that hour: Lite's rate relative to the forward pass is what
# carries over to another hour of this VM, whose speed varies by a third from hour to hour.
LITE_RECORDED_S = {(150, 10): 16.8, (300, 10): 24.1, (600, 10): 39.4, (300, 40): 41.7}
LITE_FORWARD_RECORDED_S = {(150, 10): 8.5, (300, 10): 11.9, (600, 10): 19.5, (300, 40): 11.9}
TARGET_FORWARD = {10: 0.80, 40: 0.75}
TARGET_LITE = 2.0


def _child(args: argparse.Namespace) -> None:
    """The forward-only or engine child: prints one JSON line with its in-process seconds."""
    import torch

    from dissection.broden import load_probe_set
    from dissection.data import default_workers, image_batches
    from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
    from dissection.networks import load_model
    from dissection.sources import ModelActivations, cached_activations, resolve_device

    device = resolve_device(args.device)
    workers = default_workers() if args.workers is None else args.workers
    model = load_model(args.arch)
    probe = load_probe_set(args.probe_set)
    start = time.perf_counter()
    if args.child == "forward":
        model = model.eval().to(device)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        with torch.no_grad():
            for _, pixels in image_batches(
                probe, range(len(probe)), batch_size=args.batch_size, workers=workers
            ):
                model((pixels.to(device) - mean) / std)
        phases = {}
    else:
        from dissection.results import finalize
        from dissection.scan import scan
        from dissection.tally import tally

        with tempfile.TemporaryDirectory(dir=args.out) as cache:
            source = ModelActivations(model, [LAYER], device=str(device), workers=workers)
            state = scan(
                source, probe, topk=int(args.topk), batch_size=args.batch_size, cache_dir=Path(cache)
            )[LAYER]
            scanned = time.perf_counter()
            arrays = cached_activations(Path(cache), LAYER, probe, device=str(device))
            counts = tally(
                arrays, probe, {LAYER: state.thresholds("paper")}, batch_size=args.batch_size, workers=workers
            )
            finalize(probe, state, counts[LAYER])
            phases = {"scan": scanned - start, "tally": time.perf_counter() - scanned}
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"seconds": time.perf_counter() - start, **phases}))


def _measure(command: list[str]) -> tuple[float, float, dict[str, float]]:
    """(wall seconds, peak RSS MiB, the child's JSON line or {}) of one child process, its stdout read from a
    file and its own RSS high-water mark from os.wait4."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        pid = os.posix_spawn(
            command[0],
            command,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
            ],
        )
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(
            f"{' '.join(command)} failed with status {os.waitstatus_to_exitcode(status)}:\n{stderr[-3000:]}"
        )
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return wall, usage.ru_maxrss / 1024, json.loads(lines[-1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default="300,600", help="probe-set sizes, comma-separated")
    parser.add_argument("--topk", default="10,40", help="top-k values, comma-separated")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved runs of each; the best is reported"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decoding workers (default: the CLI's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 64 images, top-k 10, one repeat")
    parser.add_argument("--child", choices=("forward", "engine"), help=argparse.SUPPRESS)
    parser.add_argument("--probe-set", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if args.quick:
        args.images, args.topk, args.repeats = "64", "10", 1
    sizes = [int(n) for n in args.images.split(",")]
    topks = [int(k) for k in args.topk.split(",")]
    python = sys.executable
    common = ["--batch-size", str(args.batch_size), "--device", args.device]
    if args.workers is not None:
        common += ["--workers", str(args.workers)]
    print(
        f"{args.arch} (random weights) {LAYER}, 224 px, batch {args.batch_size}, device {args.device}, "
        f"{os.cpu_count()} cores; best of {args.repeats} interleaved whole-process runs"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dissect-") as tmp:
        from dissection.synth import make_probe_set

        for images in sizes:
            probe = make_probe_set(Path(tmp) / f"probe{images}", images=images, size=224, seed=0)
            for topk in topks:
                out = Path(tmp) / f"out{images}-{topk}"
                out.mkdir()
                child = [
                    python,
                    str(Path(__file__).resolve()),
                    "--probe-set",
                    str(probe),
                    "--out",
                    str(out),
                    "--arch",
                    args.arch,
                    "--topk",
                    str(topk),
                    *common,
                ]
                commands = {
                    "forward": [*child, "--child", "forward"],
                    "run": [
                        python,
                        "-m",
                        "dissection",
                        "run",
                        "--probe-set",
                        str(probe),
                        "--model",
                        args.arch,
                        "--layer",
                        LAYER,
                        "--out",
                        str(out / "run"),
                        "--topk",
                        str(topk),
                        *common,
                    ],
                    "engine": [*child, "--child", "engine"],
                }
                best: dict[str, tuple[float, float, dict[str, float]]] = {}
                for _ in range(args.repeats):
                    for name, command in commands.items():
                        measured = _measure(command)
                        if name not in best or measured[0] < best[name][0]:
                            best[name] = measured
                rows.append((images, topk, best))
                _report(images, topk, best)
    _summary(rows)


def _report(images: int, topk: int, best: dict[str, tuple[float, float, dict[str, float]]]) -> None:
    forward, run, engine = best["forward"], best["run"], best["engine"]
    ratio = forward[0] / run[0]
    engine_ratio = forward[2]["seconds"] / engine[2]["seconds"]
    target = TARGET_FORWARD.get(topk, min(TARGET_FORWARD.values()))
    print(f"\n{images} images, top-k {topk}")
    print(
        f"  forward only  {forward[0]:6.1f} s  {images / forward[0]:6.1f} images/s   "
        f"(its loop {forward[2]['seconds']:.1f} s)"
    )
    print(
        f"  run           {run[0]:6.1f} s  {images / run[0]:6.1f} images/s   ratio to forward {ratio:.2f} "
        f"(target >= {target:.2f}: {'met' if ratio >= target else 'NOT met'})"
    )
    print(
        f"  engine only   {engine[2]['seconds']:6.1f} s in process (scan {engine[2]['scan']:.1f}, tally "
        f"{engine[2]['tally']:.1f}); ratio to the forward loop {engine_ratio:.2f}"
    )
    lite = LITE_RECORDED_S.get((images, topk))
    if lite is not None:
        # Lite's time scaled to this hour by the forward-only process measured beside it then and now.
        fair = lite / LITE_FORWARD_RECORDED_S[(images, topk)] * forward[0]
        print(
            f"  NetDissect-Lite (recorded Nov 2026) {lite:.1f} s, {fair:.1f} s at this hour's forward speed: "
            f"run is {fair / run[0]:.2f}x faster (target >= {TARGET_LITE:.1f}x: "
            f"{'met' if fair / run[0] >= TARGET_LITE else 'NOT met'}; {lite / run[0]:.2f}x the recorded time)"
        )
    print(f"  peak RSS      run {run[1]:.0f} MiB, forward {forward[1]:.0f} MiB, engine {engine[1]:.0f} MiB")


def _summary(rows: list[tuple[int, int, dict[str, tuple[float, float, dict[str, float]]]]]) -> None:
    peaks = {images: best["run"][1] for images, topk, best in rows}
    if len(peaks) > 1:
        low, high = min(peaks), max(peaks)
        print(
            f"\npeak RSS of run: {peaks[low]:.0f} MiB at {low} images, {peaks[high]:.0f} MiB at {high} "
            f"images ({peaks[high] / peaks[low]:.2f}x for {high / low:.1f}x the images)"
        )


if __name__ == "__main__":
    main()
