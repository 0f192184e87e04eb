"""`python -m dissection featviz`: everything is checked before the first step, and the folder appears only
when complete. Handlers import torch when they run, so that `--help` stays fast."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from dissection.errors import DissectionError
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `featviz`; it sets `handler` to a function(args) -> exit code."""
    featviz = sub.add_parser(
        "featviz",
        help="feature visualization: images optimized to drive units, checked against the probe set",
        description="Optimize images that maximize (and with --negative minimize) each unit's mean "
        "activation: Fourier parametrization with decorrelated colour, jitter, scale and rotation, Adam "
        "(Olah et al., Distill 2017). With --dissection or --probe-set, each image's activation is compared "
        "with the unit's best probe image (relative activation) and the layer's other units (selectivity).",
    )
    source = featviz.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="toy or a torchvision architecture name (resnet18, alexnet, …)")
    source.add_argument(
        "--torchscript", type=Path, help="a TorchScript model traced up to the layer; use --layer output"
    )
    featviz.add_argument("--weights", help="state_dict / checkpoint file, or a torchvision weights enum name")
    featviz.add_argument(
        "--trust-pickle", action="store_true", help="allow weights that are a whole pickled model"
    )
    featviz.add_argument("--layer", required=True, help="layer name (`output`: the model's own output)")
    which = featviz.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--units",
        help="unit numbers as in tally.csv and report.html (channel + 1): 1-16, 4,8,11-13, or all",
    )
    which.add_argument("--channels", help="the same by 0-based channel of the layer's output: 0-15, or all")
    featviz.add_argument("--out", type=Path, required=True, help="folder to write (PNGs and featviz.json)")
    featviz.add_argument("--steps", type=int, default=256)
    featviz.add_argument("--size", type=int, default=128, help="image size in px (square)")
    featviz.add_argument("--seed", type=int, default=0)
    featviz.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate (default 0.05)")
    featviz.add_argument("--diversity", type=int, default=1, metavar="K", help="images per unit (default 1)")
    featviz.add_argument(
        "--diversity-weight",
        type=float,
        default=0.5,
        help="weight of the Gram-matrix similarity penalty, in the layer's activation units (default 0.5)",
    )
    featviz.add_argument("--negative", action="store_true", help="also images that minimize each unit")
    featviz.add_argument("--batch-size", type=int, default=32, help="images optimized together (default 32)")
    featviz.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    featviz.add_argument("--mean", type=float, nargs=3, default=list(IMAGENET_MEAN))
    featviz.add_argument("--std", type=float, nargs=3, default=list(IMAGENET_STD))
    best = featviz.add_mutually_exclusive_group()
    best.add_argument(
        "--dissection",
        type=Path,
        metavar="RESULT_JSON",
        help="a dissection's OUT/<layer>/result.json: each unit's best probe image activation",
    )
    best.add_argument(
        "--probe-set",
        "--dataset",
        dest="probe_set",
        type=Path,
        help="compute each unit's best probe activation on this probe set instead",
    )
    featviz.set_defaults(handler=run_featviz)


def parse_units(text: str, layer: str, channels: int, *, base: int = 1) -> list[int]:
    """`1-16`, `4,8,11-13` or `all` → sorted distinct 0-based channels, each checked against the layer's
    count. `base` 1 reads unit numbers (`--units`, channel + 1 as in tally.csv), 0 channels (`--channels`)."""
    flag, what = ("--units", "units") if base == 1 else ("--channels", "channels")
    if text.strip() == "all":
        return list(range(channels))
    picked: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            example = "1-16 or 4,8,11-13" if base == 1 else "0-15 or 3,7,10-12"
            raise DissectionError(f"{flag} {text!r}: expected {what} such as {example}")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            raise DissectionError(f"{flag} {text!r}: the range {part.strip()} runs backwards")
        picked.update(range(first, last + 1))
    outside = sorted(n for n in picked if not base <= n < channels + base)
    if outside:
        shown = ", ".join(map(str, outside[:5])) + (" …" if len(outside) > 5 else "")
        raise DissectionError(
            f"{flag} {text}: layer {layer!r} has {channels} {what} ({base}-{channels - 1 + base}); "
            f"{len(outside)} asked for are outside it ({shown})"
        )
    return sorted(n - base for n in picked)


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value, least in (
        ("--steps", args.steps, 1),
        ("--size", args.size, 16),
        ("--diversity", args.diversity, 1),
        ("--batch-size", args.batch_size, 1),
    ):
        if value < least:
            raise DissectionError(f"{flag} must be at least {least}, got {value}")
    if args.lr <= 0 or args.diversity_weight < 0:
        raise DissectionError("--lr must be positive and --diversity-weight not negative")


def run_featviz(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dissection.errors import ModelError
    from dissection.featviz.check import best_from_probe_set, best_from_result
    from dissection.featviz.output import check_out, document, write_featviz
    from dissection.featviz.render import Recipe, layer_shape, visualize
    from dissection.networks import load_model
    from dissection.sources import resolve_device

    _check_numbers(args)
    check_out(args.out)
    if args.weights and not args.model:
        raise ModelError("--weights needs --model ARCH")
    model = load_model(
        args.model, weights=args.weights, torchscript=args.torchscript, trust_pickle=args.trust_pickle
    )
    device = resolve_device(args.device)
    channels, _, _ = layer_shape(model, args.layer, args.size, device=device, mean=args.mean, std=args.std)
    if args.units is not None:
        units = parse_units(args.units, args.layer, channels)
    else:
        units = parse_units(args.channels, args.layer, channels, base=0)
    best, best_source = None, None
    if args.dissection is not None:
        best = best_from_result(args.dissection, args.layer, channels)
        best_source = {"source": "dissection", "path": str(args.dissection.resolve())}
    elif args.probe_set is not None:
        with tqdm(desc="probe set", unit="image") as bar:

            def probe_progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            best = best_from_probe_set(
                model,
                args.layer,
                args.probe_set,
                device=device,
                mean=args.mean,
                std=args.std,
                progress=probe_progress,
            )
        best_source = {"source": "probe-set", "path": str(args.probe_set.resolve())}
    recipe = Recipe(
        steps=args.steps, lr=args.lr, diversity=args.diversity, diversity_weight=args.diversity_weight
    )
    with tqdm(desc="featviz", unit="step") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        vis = visualize(
            model,
            args.layer,
            units,
            size=args.size,
            recipe=recipe,
            seed=args.seed,
            negative=args.negative,
            device=device,
            mean=args.mean,
            std=args.std,
            batch_size=args.batch_size,
            progress=progress,
        )
    featviz = document(
        vis,
        model=str(args.torchscript) if args.torchscript else args.model,
        weights=args.weights,
        seed=args.seed,
        recipe=recipe,
        mean=args.mean,
        std=args.std,
        best=best,
        best_source=best_source,
    )
    out = write_featviz(vis, args.out, featviz)
    summary = featviz.get("summary")
    if summary and summary["median_relative_activation"] is not None:
        above = round(summary["share_above_1"] * summary["units_with_figures"])
        print(
            f"{args.layer}: median relative activation {summary['median_relative_activation']:.2f} "
            f"(1 = the unit's best probe image), {above}/{summary['units_with_figures']} units above 1 "
            f"({summary['share_above_1']:.0%}), median selectivity {summary['median_selectivity']:.2f}"
        )
    print(f"wrote {len(featviz['images'])} images and {out / 'featviz.json'}")
    return 0
