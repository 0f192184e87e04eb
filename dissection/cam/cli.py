"""Subcommands cam and localize (class activation maps). Handlers import torch when they run."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING

from dissection.errors import DissectionError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dissection.cam.localize import Sample
    from dissection.cam.maps import CamResult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's subcommands; each sets `handler` to a function(args) -> exit code."""
    cam = sub.add_parser(
        "cam",
        help="class activation map of one image, as a colour overlay with the top-3 classes",
        description="Where the network looks for a class: CAM (or Grad-CAM) over the image, the top-3 "
        "classes and probabilities written on it, and the units that drive each class.",
    )
    _model_arguments(cam)
    cam.add_argument("--image", required=True, type=Path, help="the image (any format Pillow reads)")
    which = cam.add_mutually_exclusive_group()
    which.add_argument("--class", dest="class_name", metavar="C", help="class index or name to map")
    which.add_argument("--topk", type=int, metavar="K", help="map each of the top-K classes (default 1)")
    cam.add_argument("--out", required=True, type=Path, help="PNG to write: one panel per mapped class")
    cam.add_argument(
        "--raw",
        type=Path,
        metavar="F.npz",
        help="also save raw maps at feature-map resolution (maps: classes x h x w), classes, logits",
    )
    cam.add_argument(
        "--dissection",
        type=Path,
        metavar="RESULT_JSON",
        help="dissection result.json of the CAM feature layer: name the units that drive each class",
    )
    cam.add_argument("--units", type=int, default=3, help="units to list per class (default 3)")
    cam.add_argument(
        "--tokens",
        default="auto",
        metavar="RULE",
        help="Grad-CAM on a transformer layer: how its output becomes N x C x H x W (auto, none, "
        "channels-last, patches, cls, cls+K)",
    )
    cam.add_argument("--heat-weight", type=float, help="weight of the JET map (default 0.3)")
    cam.add_argument("--image-weight", type=float, help="weight of the image (default 0.5)")
    cam.set_defaults(handler=run_cam)

    loc = sub.add_parser(
        "localize",
        help="weakly-supervised localization accuracy of CAM boxes, with baselines and a gallery",
        description="Score CAM boxes (20 % of the map's max, largest 8-connected region) against "
        "ground-truth boxes at IoU >= 0.5: top-1 and GT-known localization, a whole-image and a centred-box "
        "baseline. Writes metrics.json, cases.csv and gallery.html into --out.",
    )
    _model_arguments(loc)
    loc.add_argument(
        "--probe-set",
        "--dataset",
        dest="probe_set",
        required=True,
        type=Path,
        help="a synthetic probe set (boxes.csv, classes.txt, images/), a VOC folder "
        "(Annotations/, JPEGImages/) or a folder of ILSVRC/VOC XML files",
    )
    loc.add_argument("--images", type=Path, help="image folder for XML annotations (default: next to them)")
    loc.add_argument(
        "--box-origin",
        choices=["auto", "0", "1"],
        default="auto",
        help="XML pixel origin: auto reads VOC as 1-based and ILSVRC as 0-based",
    )
    loc.add_argument("--out", required=True, type=Path, help="output folder")
    loc.add_argument("--batch-size", type=int, default=32)
    loc.add_argument("--gallery", type=int, default=8, help="best and worst cases shown (default 8 each)")
    loc.set_defaults(handler=run_localize)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="toy or a torchvision architecture, e.g. resnet18")
    parser.add_argument(
        "--weights", help="local weights file, or a torchvision enum like ResNet18_Weights.DEFAULT"
    )
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow weights that are a whole pickled model"
    )
    parser.add_argument(
        "--method",
        choices=["cam", "gradcam"],
        default="cam",
        help="cam needs a global-average-pooling + linear head; gradcam works for any CNN",
    )
    parser.add_argument(
        "--layer", help="Grad-CAM layer (default: the CAM feature map, else the last feature map)"
    )
    parser.add_argument(
        "--size",
        type=int,
        help="input size (default: the image's own size for toy, 299 for inception_v3, else 224)",
    )
    parser.add_argument(
        "--classes-file",
        type=Path,
        help="class names, one a line (Places365's categories file works as it is)",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def _load(args: argparse.Namespace) -> nn.Module:
    import torch

    from dissection.networks import load_model

    name = args.device if args.device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DissectionError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DissectionError("--device cuda was asked for, but no CUDA device is available")
    return load_model(args.model, weights=args.weights, trust_pickle=args.trust_pickle).to(device)


def _input_size(args: argparse.Namespace) -> int | None:
    if args.size is not None:
        if args.size < 8:
            raise DissectionError(f"--size must be at least 8 px, got {args.size}")
        return int(args.size)
    if args.model == "toy":
        return None
    return 299 if args.model == "inception_v3" else 224


def _class_names(args: argparse.Namespace, count: int) -> list[str]:
    """Names from --classes-file, the toy checkpoint or the torchvision weights enum; else indices."""
    import torchvision

    from dissection.cam.localize import read_class_names

    names: list[str] | None = None
    if args.classes_file is not None:
        names = read_class_names(args.classes_file)
        if len(names) != count:
            raise DissectionError(
                f"{args.classes_file} names {len(names)} classes, but the model has {count}"
            )
        return names
    if args.weights and Path(args.weights).is_file():
        names = _checkpoint_classes(args.weights)
    elif args.weights and "_Weights." in str(args.weights):
        names = list(torchvision.models.get_weight(str(args.weights)).meta.get("categories") or []) or None
    if names is None or len(names) != count:
        return [str(i) for i in range(count)]
    return names


def _checkpoint_classes(weights: str) -> list[str] | None:
    """Class names stored with toy weights; other files (e.g. a pickled model) simply have none."""
    from dissection.networks import checkpoint_classes

    try:
        return checkpoint_classes(weights)
    except Exception:  # names are optional; the weights themselves were read by load_model
        return None


def _parse_class(text: str, names: list[str]) -> int:
    from dissection.cam.maps import ClassIndexError

    if text.lstrip("-").isdigit():
        return int(text)
    if text in names:
        return names.index(text)
    raise ClassIndexError(f"--class {text!r} is neither an index nor one of the class names")


def _compute(
    args: argparse.Namespace,
    model: nn.Module,
    images: torch.Tensor,
    classes: list[int] | None,
    topk: int | None,
) -> CamResult:
    from dissection.cam.gradcam import grad_cams
    from dissection.cam.maps import class_activation_maps

    if args.method == "cam":
        if args.layer is not None:
            raise DissectionError("--layer is for --method gradcam; CAM always uses the head's feature map")
        return class_activation_maps(model, images, classes=classes, topk=topk)
    return grad_cams(model, images, classes=classes, topk=topk, layer=args.layer, tokens=args.tokens)


def run_cam(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from dissection.cam.images import load_image, preprocess
    from dissection.cam.localize import write_atomically
    from dissection.overlay import HEAT_WEIGHT, IMAGE_WEIGHT, render_overlay, side_by_side

    if args.out.suffix.lower() != ".png":
        raise DissectionError(f"--out {args.out} must end in .png")
    if args.topk is not None and args.topk < 1:
        raise DissectionError(f"--topk must be at least 1, got {args.topk}")
    picture = load_image(args.image)
    model = _load(args)
    images = preprocess([picture], _input_size(args))
    with torch.no_grad():
        count = int(model(images[:1].to(next(model.parameters()).device)).shape[1])
    names = _class_names(args, count)
    classes = [_parse_class(args.class_name, names)] if args.class_name is not None else None
    topk = None if classes is not None else (args.topk or 1)
    result = _compute(args, model, images, classes, topk)
    probabilities = result.probabilities[0].cpu()
    top = probabilities.topk(min(3, count))
    lines = [f"{names[int(c)]} {float(p):.2f}" for p, c in zip(top.values, top.indices, strict=True)]
    heat_weight = HEAT_WEIGHT if args.heat_weight is None else args.heat_weight
    image_weight = IMAGE_WEIGHT if args.image_weight is None else args.image_weight
    panels = []
    shown = top.indices.tolist()
    for j, cls in enumerate(result.classes[0].tolist()):
        panel_lines = lines if cls in shown else [*lines, f"{names[cls]} {float(probabilities[cls]):.2f}"]
        highlight = shown.index(cls) if cls in shown else len(lines)
        panels.append(
            render_overlay(
                picture,
                result.maps[0, j],
                lines=panel_lines,
                highlight=highlight,
                heat_weight=heat_weight,
                image_weight=image_weight,
            )
        )
    png = io.BytesIO()
    side_by_side(panels).save(png, format="PNG")
    files = {args.out: png.getvalue()}
    if args.raw is not None:
        raw = io.BytesIO()
        np.savez(
            raw,
            maps=result.maps[0].cpu().numpy().astype(np.float32),
            classes=result.classes[0].cpu().numpy().astype(np.int64),
            logits=result.logits[0].cpu().numpy().astype(np.float32),
        )
        files[args.raw] = raw.getvalue()
    _print_explanations(args, model, images, result, names)
    write_atomically(files)
    print(f"wrote {args.out}" + (f" and {args.raw}" if args.raw is not None else ""))
    return 0


def _print_explanations(
    args: argparse.Namespace, model: nn.Module, images: torch.Tensor, result: CamResult, names: list[str]
) -> None:
    """Each mapped class through the units that drive it, when the model has a GAP + linear head."""
    from dissection.cam.heads import head_parameters, inspect_model
    from dissection.cam.units import explain_predictions, read_unit_labels
    from dissection.errors import ModelError

    head = inspect_model(model, images[:1].to(next(model.parameters()).device)).head
    if head is None:
        if args.dissection is not None:
            raise ModelError(
                "--dissection needs a global-average-pooling + linear head to split logits into units"
            )
        return
    labels = None
    if args.dissection is not None:
        channels = int(head_parameters(model, head)[0].shape[1])
        labels = read_unit_labels(args.dissection, layer=head.feature_layer, channels=channels)
    explained = explain_predictions(model, images, classes=result.classes.cpu(), head=head, labels=labels)[0]
    print(f"units of {head.feature_layer!r} that drive each class (w_k^c x mean f_k):")
    for explanation in explained:
        print("  " + explanation.summary(names[explanation.class_index], n=args.units))


def _samples(args: argparse.Namespace) -> tuple[list[Sample], list[str] | None]:
    from dissection.cam.localize import read_box_csv, read_class_names, read_xml_boxes

    probe_set = args.probe_set
    if not probe_set.is_dir():
        raise DissectionError(f"probe set folder {probe_set} does not exist")
    if (probe_set / "boxes.csv").is_file():
        samples, classes = read_box_csv(probe_set)
        return samples, classes
    annotations = probe_set / "Annotations" if (probe_set / "Annotations").is_dir() else probe_set
    images = args.images or (probe_set / "JPEGImages" if (probe_set / "JPEGImages").is_dir() else annotations)
    names = None
    if args.classes_file:
        names = read_class_names(args.classes_file)
    elif args.weights and Path(args.weights).is_file():
        names = _checkpoint_classes(args.weights)
    if names is None:
        raise DissectionError(
            f"{probe_set}: XML annotations name classes; give --classes-file to map them to indices"
        )
    origin = {"auto": None, "0": False, "1": True}[args.box_origin]
    return read_xml_boxes(annotations, images, names, one_based=origin), names


def run_localize(args: argparse.Namespace) -> int:
    from dissection.cam.localize import localize, write_report

    if args.batch_size < 1:
        raise DissectionError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.gallery < 0:
        raise DissectionError(f"--gallery must be 0 or more, got {args.gallery}")
    samples, classes = _samples(args)
    model = _load(args)
    if args.method == "cam" and args.layer is not None:
        raise DissectionError("--layer is for --method gradcam; CAM always uses the head's feature map")
    cases = localize(
        model,
        samples,
        method=args.method,
        layer=args.layer,
        size=_input_size(args),
        batch_size=args.batch_size,
    )
    names = classes or _class_names(args, int(max(s.label for s in samples)) + 1)
    metrics = write_report(args.out, cases, names, gallery=args.gallery)
    width = max(len(key) for key in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value if isinstance(value, int) else f'{100 * value:5.1f} %'}")
    print(f"wrote {args.out / 'metrics.json'}, {args.out / 'gallery.html'}")
    return 0
