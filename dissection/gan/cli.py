"""`python -m dissection gan-run | gan-effect | train-toy-segmenter | train-toy-generator`. Handlers import
torch when they run, so that `--help` stays fast."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dissection.errors import DissectionError


def _floats(count: int, flag: str) -> Any:
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} {text!r}: expected {count} comma-separated numbers"
            ) from None
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected {count} comma-separated numbers")
        return values

    return parse


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated integers, e.g. 512 or 512,1,1"
        ) from None
    return values


def _model_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--generator",
        type=Path,
        required=required,
        help="a TorchScript generator (with --latent-shape) or a checkpoint from train-toy-generator",
    )
    parser.add_argument("--latent-shape", type=_ints, help="the latent of one sample, e.g. 512 or 512,1,1")
    parser.add_argument(
        "--output-range",
        type=_floats(2, "--output-range"),
        help="LOW,HIGH of the generator's pixel values (default -1,1, or the checkpoint's)",
    )
    parser.add_argument(
        "--segmenter",
        type=Path,
        required=required,
        help="a TorchScript segmenter (with --classes) or a checkpoint from train-toy-segmenter",
    )
    parser.add_argument(
        "--classes", type=Path, help="classes.csv (name,category) of the segmenter's channels"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=32)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add gan-run, gan-effect, train-toy-segmenter and train-toy-generator."""
    run = sub.add_parser(
        "gan-run",
        help="dissect a generator layer: its units labelled by IoU with a segmenter's concepts on samples",
    )
    _model_arguments(run, required=True)
    run.add_argument("--layer", action="append", required=True, help="generator layer (repeat for several)")
    run.add_argument("--samples", type=int, default=1000, help="samples to generate (default 1000)")
    run.add_argument("--seed", type=int, default=0, help="sample i's latent comes from (seed, i)")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--mask-size", type=_ints, help="H,W of the segmentation (default: the image size)")
    run.add_argument(
        "--threshold",
        type=float,
        action="append",
        help="segmenter confidence a pixel's label needs (repeat for one label per threshold; default 0)",
    )
    run.add_argument("--semantics", choices=("paper", "netdissect-lite"), default="paper")
    run.add_argument("--topk", type=int, default=20)
    run.add_argument("--iou-threshold", type=float, default=0.04)
    run.set_defaults(handler=_gan_run)

    effect = sub.add_parser(
        "gan-effect",
        help="ablate and insert a concept's top units (and random controls): effect curves and image grids",
    )
    effect.add_argument(
        "--dissection", type=Path, required=True, help="a layer folder written by gan-run (OUT/<layer>)"
    )
    effect.add_argument(
        "--concept", action="append", required=True, help="concept label (repeat for several)"
    )
    _model_arguments(effect, required=False)
    effect.add_argument("--samples", type=int, default=200)
    effect.add_argument("--seed", type=int, default=1, help="seed of the samples measured (default 1)")
    effect.add_argument("--limit", type=int, default=16, help="largest number of units (n = 1, 2, 4, …)")
    effect.add_argument("--controls", type=int, default=3, help="random unit sets per size")
    effect.add_argument(
        "--region",
        type=_floats(4, "--region"),
        default=(0.25, 0.25, 0.75, 0.75),
        help="X0,Y0,X1,Y1 (fractions of the image) where units are inserted",
    )
    effect.add_argument("--grid", type=int, default=6, help="samples in the before/after grids")
    effect.add_argument("--out", type=Path, help="default: DISSECTION/effects")
    effect.set_defaults(handler=_gan_effect)

    segmenter = sub.add_parser(
        "train-toy-segmenter", help="train the toy segmenter (objects and materials) on a synthetic probe set"
    )
    segmenter.add_argument("out", type=Path, help="checkpoint to write, e.g. toy-segmenter.pt")
    segmenter.add_argument(
        "--probe-set", type=Path, required=True, help="a probe set made by `synth` (e.g. --size 64)"
    )
    segmenter.add_argument("--seed", type=int, default=0)
    segmenter.add_argument("--epochs", type=int, default=None)
    segmenter.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    segmenter.set_defaults(handler=_train_segmenter)

    generator = sub.add_parser(
        "train-toy-generator", help="train the toy generator (a conditional decoder of synthetic scenes)"
    )
    generator.add_argument("out", type=Path, help="checkpoint to write, e.g. toy-generator.pt")
    generator.add_argument("--seed", type=int, default=0)
    generator.add_argument("--steps", type=int, default=None)
    generator.add_argument("--scenes", type=int, default=4000, help="training scenes rendered by synth")
    generator.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    generator.set_defaults(handler=_train_generator)


def _models(
    args: argparse.Namespace, recorded: dict[str, Any] | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """The generator and segmenter the arguments (or a gan.json) name, and the files, for gan.json."""
    from dissection.gan.dissect import probe_generator
    from dissection.gan.models import load_generator, load_segmenter

    recorded = recorded or {}
    gen = recorded.get("generator", {})
    seg = recorded.get("segmenter", {})
    generator_path = args.generator or gen.get("path")
    segmenter_path = args.segmenter or seg.get("path")
    if not generator_path or not segmenter_path:
        raise DissectionError("name the generator and the segmenter (--generator, --segmenter)")
    classes = args.classes or (seg.get("classes") if not args.segmenter else None)
    output_range = args.output_range or (tuple(gen["output_range"]) if "output_range" in gen else None)
    generator = load_generator(
        generator_path,
        latent_shape=args.latent_shape or gen.get("latent_shape"),
        output_range=output_range,
        device=args.device,
    )
    layers = getattr(args, "layer", None) or [recorded["layer"]]
    image_size = probe_generator(generator, layers, getattr(args, "seed", 0))
    mask_size = getattr(args, "mask_size", None) or recorded.get("mask_size") or image_size
    if len(mask_size) != 2 or min(mask_size) < 1:
        raise DissectionError(f"--mask-size {mask_size}: expected H,W")
    thresholds = getattr(args, "threshold", None) or seg.get("thresholds") or [0.0]
    segmenter = load_segmenter(
        segmenter_path,
        mask_size=(int(mask_size[0]), int(mask_size[1])),
        classes=classes,
        thresholds=thresholds,
        mean=seg.get("mean"),
        std=seg.get("std"),
        device=args.device,
    )
    sources = {
        "generator": str(Path(generator_path).resolve()),
        "segmenter": str(Path(segmenter_path).resolve()),
        "classes": str(Path(classes).resolve()) if classes else None,
    }
    return generator, segmenter, sources


def _gan_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dissection.gan.dissect import dissect_generator
    from dissection.results import summary_line

    generator, segmenter, sources = _models(args)
    bars: dict[str, tqdm[Any]] = {}

    def progress(phase: str, done: int, total: int) -> None:
        """One bar per phase; the one before is closed."""
        if phase not in bars:
            for bar in bars.values():
                bar.close()
            unit = "‰" if phase.startswith("report") else "sample"
            bars[phase] = tqdm(desc=phase, total=total, unit=unit)
        bars[phase].update(done - bars[phase].n)

    try:
        written = dissect_generator(
            generator,
            segmenter,
            args.out,
            layers=args.layer,
            samples=args.samples,
            seed=args.seed,
            semantics=args.semantics,
            topk=args.topk,
            batch_size=args.batch_size,
            iou_threshold=args.iou_threshold,
            sources=sources,
            progress=progress,
        )
    finally:
        for bar in bars.values():
            bar.close()
    for layer, folder in written.items():
        print(f"{layer}: {summary_line(folder)}")
        print(f"  report: {folder / 'report.html'}")
    return 0


def _gan_effect(args: argparse.Namespace) -> int:
    import json as json_module

    from tqdm import tqdm

    from dissection.gan.dissect import concept_ranking, read_gan_document
    from dissection.gan.effects import causal_effects
    from dissection.gan.plots import before_after_grid, effect_plot

    document = read_gan_document(args.dissection)
    rankings = [concept_ranking(document, concept) for concept in args.concept]  # unknown names fail first
    args.layer = None
    generator, segmenter, _ = _models(args, document)
    out = args.out or args.dissection / "effects"
    for concept, (entry, ranking) in zip(args.concept, rankings, strict=True):
        with tqdm(desc=f"gan-effect {concept}", unit="sample") as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            effects, images = causal_effects(
                generator,
                segmenter,
                layer=document["layer"],
                concept=entry,
                ranking=ranking,
                samples=args.samples,
                seed=args.seed,
                limit=args.limit,
                controls=args.controls,
                region=args.region,
                grid=args.grid,
                batch_size=args.batch_size,
                progress=progress,
            )
        folder = out / concept
        folder.mkdir(parents=True, exist_ok=True)
        effect_plot(effects, folder / "effect.png")
        before_after_grid(images["ablation_before"], images["ablation_after"], folder / "ablation.png")
        if "insertion_before" in images:
            before_after_grid(
                images["insertion_before"],
                images["insertion_after"],
                folder / "insertion.png",
                region=list(args.region),
            )
        (folder / "effects.json").write_text(json_module.dumps(effects, indent=1))
        last = effects["curves"][-1]
        line = (
            f"{concept}: removing its top {last['units']} units lowers its share by "
            f"{last['ablation']['mean']:.4f} (random: {last['ablation_control']['mean']:.4f})"
        )
        if last["insertion"] is not None:
            line += (
                f"; inserting them makes {last['insertion']['mean']:.1%} of the region {concept} "
                f"(random: {last['insertion_control']['mean']:.1%})"
            )
        print(line)
        print(f"  plots: {folder}")
    return 0


def _train_segmenter(args: argparse.Namespace) -> int:
    import torch

    from dissection.gan.train import SEGMENTER_EPOCHS, train_toy_segmenter

    torch.set_num_threads(max(1, args.threads))
    quality = train_toy_segmenter(
        args.probe_set, args.out, seed=args.seed, epochs=args.epochs or SEGMENTER_EPOCHS
    )
    per_class = ", ".join(f"{name} {value:.3f}" for name, value in quality["iou"].items())
    print(
        f"wrote {args.out}; on {quality['held_out_images']} held-out images: pixel accuracy "
        f"{quality['pixel_accuracy']:.3f}, mean IoU {quality['mean_iou']:.3f} ({per_class})"
    )
    return 0


def _train_generator(args: argparse.Namespace) -> int:
    import torch

    from dissection.gan.train import GENERATOR_STEPS, train_toy_generator

    torch.set_num_threads(max(1, args.threads))
    quality = train_toy_generator(
        args.out, seed=args.seed, steps=args.steps or GENERATOR_STEPS, scenes=args.scenes
    )
    samples = args.out.with_name(f"{args.out.stem}-samples.png")
    print(
        f"wrote {args.out}; held-out L1 error {quality['held_out_l1']:.1f} of 255 per pixel value; "
        f"samples (synth above, generator below): {samples}"
    )
    return 0
