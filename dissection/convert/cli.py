"""Subcommands convert (COCO, ADE20K, a folder of images and masks → Broden) and segment (images + a
segmenter → Broden). Handlers import their converter (and torch, pycocotools) when they run."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from dissection.convert.formats import FORMATS
from dissection.errors import DissectionError
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add convert and segment; each sets `handler` to a function(args) -> exit code."""
    convert = sub.add_parser(
        "convert",
        help="convert COCO, ADE20K, Pascal-Context, Pascal-Part or a folder of images and masks to a "
        "Broden-format probe set",
        description="Write a Broden-format probe set from a dataset in another format. Resumable: a rerun "
        "with the same options skips the images already written (they wait in OUT's hidden "
        ".<name>.partial sibling until the set is complete).",
    )
    convert.add_argument("format", choices=FORMATS, help="the source's format")
    convert.add_argument("src", type=Path, help="coco: an annotation JSON; the others: the dataset folder")
    convert.add_argument("out", type=Path, help="probe set folder to create")
    _size_arguments(convert)
    coco = convert.add_argument_group("coco")
    coco.add_argument(
        "--images",
        type=Path,
        help="image folder (coco default: val2017/ etc. beside annotations/; pascal-*: SRC/JPEGImages)",
    )
    coco.add_argument(
        "--extra",
        type=Path,
        action="append",
        default=[],
        help="more instance-format JSON over the same images, e.g. COCO-Stuff's stuff_val2017.json (repeat)",
    )
    coco.add_argument("--panoptic-masks", type=Path, help="panoptic PNG folder (default: named like SRC)")
    coco.add_argument(
        "--stuff-category",
        action="append",
        default=[],
        metavar="SUPER=CATEGORY",
        help="Broden category of a COCO stuff supercategory, e.g. building=material (repeat)",
    )
    coco.add_argument("--split", help="index.csv's split column (default: val or train from the file name)")
    pascal = convert.add_argument_group("pascal-context")
    pascal.add_argument(
        "--classes", choices=("459", "59"), help="all 459 classes (default) or the 59-class subset"
    )
    folder = convert.add_argument_group("folder")
    folder.add_argument("--void", type=int, help="a mask value that means unlabelled, e.g. 255")
    convert.set_defaults(handler=run_convert)

    segment = sub.add_parser(
        "segment",
        help="label a folder of images with a segmenter and write the Broden-format probe set",
        description="Each image is resized to --size, segmented, and each pixel labelled with the class of "
        "highest probability (at least --threshold) at --mask-size. The classes file lists the segmenter's "
        "output channels in order as name,category; an empty category (background) is left unlabelled.",
    )
    segment.add_argument("src", type=Path, help="folder of images (searched recursively)")
    segment.add_argument("out", type=Path, help="probe set folder to create")
    model = segment.add_mutually_exclusive_group(required=True)
    model.add_argument("--segmenter", type=Path, help="a TorchScript segmentation model")
    model.add_argument("--arch", help="an architecture load_model knows (with --weights)")
    segment.add_argument("--weights", help="weights for --arch")
    segment.add_argument("--trust-pickle", action="store_true", help="allow weights that are a pickled model")
    segment.add_argument("--classes", type=Path, required=True, help="CSV name,category, one row per channel")
    segment.add_argument(
        "--threshold",
        type=float,
        action="append",
        help="least class probability for a pixel to be labelled (default 0: the most probable class); "
        "repeat for one label per class and threshold",
    )
    segment.add_argument("--batch-size", type=int, default=8)
    segment.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    segment.add_argument("--mean", type=float, nargs=3, default=list(IMAGENET_MEAN))
    segment.add_argument("--std", type=float, nargs=3, default=list(IMAGENET_STD))
    _size_arguments(segment)
    segment.set_defaults(handler=run_segment)


def _size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="224", help="image size: N or HxW (default 224)")
    parser.add_argument("--mask-size", help="label mask size: N or HxW (default: half the image size)")
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg", help="jpg (default) or png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_size(text: str, flag: str) -> tuple[int, int]:
    """`224` → (224, 224); `224x320` → (224, 320)."""
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if match is None or int(match.group(1)) < 1 or int(match.group(2) or 1) < 1:
        raise DissectionError(f"{flag} {text!r} is not N or HxW with positive sizes")
    return int(match.group(1)), int(match.group(2) or match.group(1))


def _sizes(args: argparse.Namespace) -> tuple[tuple[int, int], tuple[int, int]]:
    image_size = parse_size(args.size, "--size")
    if args.mask_size is None:
        return image_size, (max(1, image_size[0] // 2), max(1, image_size[1] // 2))
    return image_size, parse_size(args.mask_size, "--mask-size")


def _stuff_categories(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        supercategory, _, category = item.partition("=")
        if not supercategory or not category:
            raise DissectionError(f"--stuff-category {item!r} is not SUPER=CATEGORY")
        mapping[supercategory] = category
    return mapping


def run_convert(args: argparse.Namespace) -> int:
    from dissection.convert.formats import convert_dataset, read_source

    image_size, mask_size = _sizes(args)
    if args.format != "coco":
        own = (
            ("panoptic_masks", "split")
            if args.format.startswith("pascal")
            else ("images", "panoptic_masks", "split")
        )
        given = [f for f in own if getattr(args, f) is not None]
        given += ["extra"] * bool(args.extra) + ["stuff_category"] * bool(args.stuff_category)
        if given:
            raise DissectionError(f"--{given[0].replace('_', '-')} is an option of convert coco")
    if args.format != "pascal-context" and args.classes is not None:
        raise DissectionError("--classes is an option of convert pascal-context")
    if args.format != "folder" and args.void is not None:
        raise DissectionError("--void is an option of convert folder")
    source = read_source(
        args.format,
        args.src,
        images=args.images,
        extra=args.extra,
        panoptic_masks=args.panoptic_masks,
        stuff_categories=_stuff_categories(args.stuff_category),
        split=args.split,
        classes=args.classes,
        void=args.void,
    )
    out = convert_dataset(
        source,
        args.out,
        fmt=args.format,
        image_size=image_size,
        mask_size=mask_size,
        image_format=args.image_format,
        progress=not args.quiet,
    )
    images, labels, categories = source.images, source.labels, source.categories
    print(f"wrote {len(images)} images and {len(labels)} labels ({', '.join(categories)}) to {out}")
    return 0


def run_segment(args: argparse.Namespace) -> int:
    from dissection.convert.segment import Segmenter, read_classes, segment_folder
    from dissection.networks import load_model

    image_size, mask_size = _sizes(args)
    if args.batch_size < 1:
        raise DissectionError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.weights and not args.arch:
        raise DissectionError("--weights needs --arch")
    model = load_model(
        args.arch, weights=args.weights, torchscript=args.segmenter, trust_pickle=args.trust_pickle
    )
    thresholds = args.threshold or [0.0]
    segmenter = Segmenter(
        model,
        read_classes(args.classes),
        mask_size=mask_size,
        thresholds=thresholds,
        mean=args.mean,
        std=args.std,
        device=args.device,
        where=str(args.segmenter or args.arch),
    )
    options = {
        "src": str(args.src.resolve()),
        "segmenter": str(args.segmenter.resolve()) if args.segmenter else args.arch,
        "weights": args.weights,
        "classes": str(args.classes.resolve()),
        "thresholds": thresholds,
        "mean": args.mean,
        "std": args.std,
    }
    out = segment_folder(
        args.src,
        args.out,
        segmenter,
        image_size=image_size,
        image_format=args.image_format,
        batch_size=args.batch_size,
        options=options,
        progress=not args.quiet,
    )
    print(f"wrote {len(segmenter.labels)} labels ({', '.join(segmenter.categories)}) to {out}")
    return 0
