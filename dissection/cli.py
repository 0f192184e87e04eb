"""`python -m dissection …`: one parser; the dissection subcommands are here, `cam` and `localize` in
`dissection.cam.cli`. Handlers import torch when they run, so that `--help` stays fast."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dissection.errors import DissectionError
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD


def build_parser() -> argparse.ArgumentParser:
    from dissection.cam import cli as cam_cli
    from dissection.convert import cli as convert_cli
    from dissection.featviz import cli as featviz_cli
    from dissection.gan import cli as gan_cli

    parser = argparse.ArgumentParser(
        prog="python -m dissection",
        description="Network Dissection and class activation maps in plain PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    cam_cli.register(sub)
    featviz_cli.register(sub)
    convert_cli.register(sub)
    gan_cli.register(sub)
    _register_compare(sub)
    return parser


def main(argv: list[str] | None = None, *, own_process: bool = False) -> int:
    """Run a command; `own_process`: the CLI is the whole process (`python -m dissection`), so a handler may
    tune the process's garbage collector (`_importing`)."""
    args = build_parser().parse_args(argv)
    args.own_process = own_process
    try:
        return int(args.handler(args) or 0)
    except DissectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


@contextmanager
def _importing(own_process: bool) -> Iterator[None]:
    """Around a handler's imports of torch and torchvision, when the CLI is the whole process: they make
    about a million objects that live as long as the process, which the collector would walk over and over
    while they are made (and again in every full collection after, and at exit); collection is paused
    meanwhile, and then they are frozen out of it."""
    if not own_process:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add synth, train-toy, run, tiles and report; each sets `handler` to a function(args) -> exit code."""
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
    train.add_argument(
        "--target", choices=("object", "scene"), default="object", help="what the network learns to name"
    )
    train.add_argument(
        "--finetune", type=Path, metavar="FROM.pt", help="start from this toy checkpoint (a new classifier)"
    )
    train.add_argument(
        "--save-every", type=int, metavar="N", help="also keep OUT-epochNNN.pt every N epochs (a series)"
    )
    train.set_defaults(handler=_train)

    run = sub.add_parser("run", help="dissect layers of a model (or precomputed activations) on a probe set")
    data = run.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--probe-set", "--dataset", dest="probe_set", type=Path, help="Broden-format probe set folder"
    )
    data.add_argument(
        "--images",
        type=Path,
        help="a folder of images (any size, searched recursively) labelled in memory by --segmenter",
    )
    labelled = run.add_argument_group("--images: the segmenter that labels them (no PNG is written)")
    labelled.add_argument(
        "--segmenter",
        type=Path,
        help="a TorchScript segmenter (with --classes) or a checkpoint from train-toy-segmenter",
    )
    labelled.add_argument(
        "--classes", type=Path, help="CSV name,category, one row per segmenter channel (TorchScript)"
    )
    labelled.add_argument(
        "--segmenter-threshold",
        type=float,
        action="append",
        help="least class probability for a pixel's label (default 0); repeat for one label per threshold",
    )
    labelled.add_argument("--size", default="224", help="image size: N or HxW (default 224)")
    labelled.add_argument("--mask-size", help="label mask size: N or HxW (default: half the image size)")
    labelled.add_argument(
        "--segmenter-mean", type=float, nargs=3, help="default: ImageNet's, or the toy checkpoint's"
    )
    labelled.add_argument("--segmenter-std", type=float, nargs=3)
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
        "--tokens",
        default="auto",
        metavar="RULE",
        help="how a transformer layer's output becomes N x C x H x W: auto (default), none, channels-last, "
        "patches, cls or cls+K (K register tokens); see dissection/tokens.py",
    )
    run.add_argument(
        "--workers", type=int, default=None, help="image-decoding processes (default: cores - 1)"
    )
    run.set_defaults(handler=_run)

    tiles = sub.add_parser(
        "tiles", help="make the full-size tiles of units of a dissected layer (the report shows thumbnails)"
    )
    tiles.add_argument("layer_dir", type=Path, help="OUT/<layer> of a run")
    which = tiles.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--unit", type=int, action="append", help="unit number as in report.html and tally.csv (repeat)"
    )
    which.add_argument("--all", action="store_true", help="every unit of the layer")
    tiles.set_defaults(handler=_tiles)

    report = sub.add_parser("report", help="rebuild OUT/<layer>/report.html from its result.json")
    report.add_argument("layer_dir", type=Path)
    report.add_argument(
        "--featviz",
        type=Path,
        metavar="DIR",
        help="a `featviz` output folder of the same layer: show each unit's images beside its strip",
    )
    report.set_defaults(handler=_report)


def _synth(args: argparse.Namespace) -> int:
    from dissection.synth import make_probe_set

    make_probe_set(args.out, images=args.images, size=args.size, seed=args.seed)
    print(f"wrote {args.images} images of {args.size} px to {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from dissection.train import train_toy

    train_toy(
        args.probe_set,
        args.out,
        seed=args.seed,
        epochs=args.epochs,
        target=args.target,
        finetune=args.finetune,
        save_every=args.save_every,
    )
    print(f"wrote {args.out}; dissect it with --model toy --weights {args.out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    with _importing(args.own_process):
        from tqdm import tqdm

        from dissection.errors import ModelError
        from dissection.networks import load_model
        from dissection.pipeline import dissect
        from dissection.results import summary_line

    if args.weights and not args.model:
        raise ModelError("--weights needs --model ARCH")
    model = None
    if args.model or args.torchscript:
        model = load_model(
            args.model, weights=args.weights, torchscript=args.torchscript, trust_pickle=args.trust_pickle
        )
    bars: dict[str, tqdm[Any]] = {}
    phases = 1 + 2 * len(args.layer)  # the scan, then a tally and a report per layer

    def progress(phase: str, done: int, total: int) -> None:
        """One bar per phase, its total fixed when the phase starts and its place among all the phases in
        its name ("2/5 tally conv3"), so no total changes from start to end; the one before is closed."""
        if phase not in bars:
            for bar in bars.values():
                bar.close()
            unit = "‰" if phase.startswith("report") else "image"
            bars[phase] = tqdm(desc=f"{len(bars) + 1}/{phases} {phase}", total=total, unit=unit)
        bars[phase].update(done - bars[phase].n)

    probe_set, labels = _run_data(args)
    try:
        written = dissect(
            probe_set,
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
            tokens=args.tokens,
            labels=labels,
        )
    finally:
        for bar in bars.values():
            bar.close()
    for layer, folder in written.items():
        print(f"{layer}: {summary_line(folder)}")
        if (folder / "tokens.json").is_file():
            print(f"  tokens: {json.loads((folder / 'tokens.json').read_text())['description']}")
        print(f"  report: {folder / 'report.html'}")
        print(f"  full-size tiles of a unit: python -m dissection tiles {folder} --unit N")
    return 0


def _run_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """(probe set, label source): the --probe-set folder and None, or the --images folder and the
    --segmenter that labels it in memory."""
    segmenter_flags = ("segmenter", "classes", "segmenter_threshold", "mask_size", "segmenter_mean")
    if args.probe_set is not None:
        given = [flag for flag in segmenter_flags if getattr(args, flag) is not None]
        if given:
            raise DissectionError(f"--{given[0].replace('_', '-')} goes with --images, not --probe-set")
        return args.probe_set, None
    if args.segmenter is None:
        raise DissectionError("--images needs --segmenter (a TorchScript one with --classes) to label them")
    from dissection.convert.cli import parse_size
    from dissection.convert.segment import SegmenterLabels, image_folder
    from dissection.gan.models import load_segmenter

    image_size = parse_size(args.size, "--size")
    mask_size = (
        parse_size(args.mask_size, "--mask-size")
        if args.mask_size
        else (max(1, image_size[0] // 2), max(1, image_size[1] // 2))
    )
    segmenter = load_segmenter(
        args.segmenter,
        mask_size=mask_size,
        classes=args.classes,
        thresholds=args.segmenter_threshold or [0.0],
        mean=args.segmenter_mean,
        std=args.segmenter_std,
        device=args.device,
    )
    return image_folder(args.images, image_size), SegmenterLabels(segmenter)


def _tiles(args: argparse.Namespace) -> int:
    from dissection.render import write_unit_tiles

    paths = write_unit_tiles(args.layer_dir, None if args.all else args.unit)
    for folder in sorted({path.parent for path in paths}):
        print(f"unit {int(folder.name.removeprefix('unit_'))}: {folder}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from dissection.render import write_report

    print(write_report(args.layer_dir, args.featviz))
    return 0


def _register_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compare = sub.add_parser(
        "compare",
        help="compare dissections (networks, checkpoints, fine-tuning): compare.json and compare.html",
    )
    compare.add_argument(
        "dirs", type=Path, nargs="+", metavar="DIR", help="a run's --out folder, or a layer's"
    )
    compare.add_argument("--out", type=Path, required=True)
    compare.add_argument("--name", action="append", help="one per DIR, in order (default: the folder name)")
    compare.add_argument("--step", action="append", type=int, help="one per DIR: its training step")
    compare.add_argument(
        "--tag",
        action="append",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="one per DIR, e.g. arch=toy,stage=before",
    )
    compare.add_argument("--iou-threshold", type=float, help="default: each result's own threshold")
    compare.add_argument(
        "--allow-mismatch", action="store_true", help="compare runs on different probe sets or semantics"
    )
    compare.set_defaults(handler=_compare)


def _per_dir(values: list[Any] | None, count: int, flag: str) -> list[Any]:
    if values is None:
        return [None] * count
    if len(values) != count:
        raise DissectionError(
            f"{flag} is given {len(values)} times for {count} folders: give it once per DIR"
        )
    return values


def _tags(text: str | None) -> dict[str, str]:
    tags = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DissectionError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key.strip()] = value.strip()
    return tags


def _compare(args: argparse.Namespace) -> int:
    from dissection.compare import RunSpec, load_runs
    from dissection.compare_report import write_comparison

    count = len(args.dirs)
    names = [
        name or folder.resolve().name
        for name, folder in zip(_per_dir(args.name, count, "--name"), args.dirs, strict=True)
    ]
    specs = [
        RunSpec(name, folder, step, _tags(tag))
        for name, folder, step, tag in zip(
            names,
            args.dirs,
            _per_dir(args.step, count, "--step"),
            _per_dir(args.tag, count, "--tag"),
            strict=True,
        )
    ]
    runs = load_runs(specs, allow_mismatch=args.allow_mismatch)
    out = write_comparison(runs, args.out, iou_threshold=args.iou_threshold)
    print(f"wrote {out / 'compare.json'} and {out / 'compare.html'}")
    return 0
