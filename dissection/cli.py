"""`python -m dissection …`: one parser; the dissection subcommands are here, `cam` and `localize` in
`dissection.cam.cli`. Handlers import torch when they run, so that `--help` stays fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dissection.errors import DissectionError
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD


def build_parser() -> argparse.ArgumentParser:
    from dissection.cam import cli as cam_cli

    parser = argparse.ArgumentParser(
        prog="python -m dissection",
        description="Network Dissection and class activation maps in plain PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    cam_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except DissectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add synth, train-toy, run and report; each sets `handler` to a function(args) -> exit code."""
    synth = sub.add_parser("synth", help="write a deterministic synthetic probe set in the Broden format")
    synth.add_argument("out", type=Path, help="folder to create")
    synth.add_argument("--images", type=int, default=200)
    synth.add_argument("--size", type=int, default=96, help="image size in px (masks are half of it)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_synth)

    train = sub.add_parser("train-toy", help="train the toy CNN on a synthetic probe set (CPU, ~2 minutes)")
    train.add_argument("out", type=Path, help="checkpoint to write, e.g. toy.pt")
    train.add_argument(
        "--probe-set",
        "--dataset",
        dest="probe_set",
        type=Path,
        required=True,
        help="a probe set made by `synth`",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, default=None)
    train.set_defaults(handler=_train)

    run = sub.add_parser("run", help="dissect layers of a model (or precomputed activations) on a probe set")
    run.add_argument(
        "--probe-set",
        "--dataset",
        dest="probe_set",
        type=Path,
        required=True,
        help="Broden-format probe set folder",
    )
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="toy or a torchvision architecture name (resnet18, alexnet, …)")
    source.add_argument("--torchscript", type=Path, help="a TorchScript model file")
    source.add_argument(
        "--activations", type=Path, help=".npy of images x units x h x w, rows in index.csv order"
    )
    run.add_argument("--weights", help="state_dict / checkpoint file, or a torchvision weights enum name")
    run.add_argument(
        "--trust-pickle", action="store_true", help="allow weights that are a whole pickled model"
    )
    run.add_argument("--layer", action="append", required=True, help="layer name (repeat for several)")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--semantics", choices=("paper", "netdissect-lite"), default="paper")
    run.add_argument("--topk", type=int, default=20)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument("--mean", type=float, nargs=3, default=list(IMAGENET_MEAN))
    run.add_argument("--std", type=float, nargs=3, default=list(IMAGENET_STD))
    run.add_argument("--iou-threshold", type=float, default=0.04)
    run.add_argument(
        "--workers", type=int, default=None, help="image-decoding processes (default: cores - 1)"
    )
    run.set_defaults(handler=_run)

    report = sub.add_parser("report", help="rebuild OUT/<layer>/report.html from its result.json")
    report.add_argument("layer_dir", type=Path)
    report.set_defaults(handler=_report)


def _synth(args: argparse.Namespace) -> int:
    from dissection.synth import make_probe_set

    make_probe_set(args.out, images=args.images, size=args.size, seed=args.seed)
    print(f"wrote {args.images} images of {args.size} px to {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from dissection.train import train_toy

    train_toy(args.probe_set, args.out, seed=args.seed, epochs=args.epochs)
    print(f"wrote {args.out}; dissect it with --model toy --weights {args.out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dissection.errors import ModelError
    from dissection.networks import load_model
    from dissection.pipeline import dissect

    if args.weights and not args.model:
        raise ModelError("--weights needs --model ARCH")
    model = None
    if args.model or args.torchscript:
        model = load_model(
            args.model, weights=args.weights, torchscript=args.torchscript, trust_pickle=args.trust_pickle
        )
    with tqdm(desc="dissect", unit="step") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        written = dissect(
            args.probe_set,
            args.out,
            layers=args.layer,
            model=model,
            activations=args.activations,
            semantics=args.semantics,
            topk=args.topk,
            batch_size=args.batch_size,
            device=args.device,
            mean=args.mean,
            std=args.std,
            iou_threshold=args.iou_threshold,
            workers=args.workers,
            progress=progress,
        )
    for layer, folder in written.items():
        document = json.loads((folder / "result.json").read_text())
        summary = document["summary"]
        top = ", ".join(f"{label} {count}" for label, count in list(summary["per_concept"].items())[:8])
        print(
            f"{layer}: {summary['interpretable']}/{document['num_units']} units covering "
            f"{summary['unique_concepts']} concepts with IoU > {document['iou_threshold']:g}"
            + (f" ({top})" if top else "")
        )
        print(f"  report: {folder / 'report.html'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from dissection.render import write_report

    print(write_report(args.layer_dir))
    return 0
