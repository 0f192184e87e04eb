"""Weakly-supervised localization with class activation maps, scored as in Zhou et al. (CVPR 2016).

The raw map is upsampled bilinearly to the image and thresholded at 20 % of its max (normalization is for
display only); the bounding box of the largest 8-connected component is the prediction. A box is right when
its IoU with a ground-truth box of the class is at least 0.5, with boxes in inclusive pixel coordinates
(width = x2 − x1 + 1). Ground truth comes from a synthetic probe set's boxes.csv or from PASCAL VOC / ILSVRC
XML.
"""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from dissection.cam.gradcam import grad_cams, gradcam_layer
from dissection.cam.heads import GapHead, detect_gap_head
from dissection.cam.images import load_image, preprocess
from dissection.cam.maps import CamResult, class_activation_maps
from dissection.errors import DissectionError, ProbeSetError
from dissection.overlay import draw_boxes, render_overlay, upsample

THRESHOLD = 0.2
IOU_CORRECT = 0.5
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class Box(NamedTuple):
    """Inclusive pixel box: (x1, y1) and (x2, y2) are both inside it."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1 + 1

    @property
    def height(self) -> int:
        return self.y2 - self.y1 + 1

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)


def iou(a: Box, b: Box) -> float:
    """Intersection over union with the inclusive convention (a one-pixel box has area 1)."""
    inter_w = min(a.x2, b.x2) - max(a.x1, b.x1) + 1
    inter_h = min(a.y2, b.y2) - max(a.y1, b.y1) + 1
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    return inter / (a.area + b.area - inter)


def threshold_map(values: np.ndarray, fraction: float = THRESHOLD) -> np.ndarray:
    """Pixels at or above `fraction` of the map's max; none when the map has no positive value."""
    peak = float(values.max())
    if not peak > 0:
        return np.zeros(values.shape, dtype=bool)
    return values >= fraction * peak


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (the first in raster order on ties); empty stays
    empty."""
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def mask_box(mask: np.ndarray) -> Box | None:
    """The tightest inclusive box around a mask's pixels, or None for an empty mask."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return Box(int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))


def cam_box(raw: torch.Tensor | np.ndarray, height: int, width: int, fraction: float = THRESHOLD) -> Box:
    """The CAM box of one raw map for an image of height x width pixels (the whole image if nothing is
    above)."""
    box = mask_box(largest_component(threshold_map(upsample(raw, height, width), fraction)))
    return box if box is not None else full_image_box(width, height)


def full_image_box(width: int, height: int) -> Box:
    return Box(0, 0, width - 1, height - 1)


def centred_box(width: int, height: int, relative_width: float, relative_height: float) -> Box:
    """A box of the given fraction of the image's width and height, centred in it."""
    box_w = min(width, max(1, round(relative_width * width)))
    box_h = min(height, max(1, round(relative_height * height)))
    x1, y1 = (width - box_w) // 2, (height - box_h) // 2
    return Box(x1, y1, x1 + box_w - 1, y1 + box_h - 1)


# ------------------------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class Sample:
    """One image: its size, its main class and every ground-truth box as (class, box)."""

    image: Path
    name: str
    width: int
    height: int
    label: int
    boxes: tuple[tuple[int, Box], ...]

    def boxes_of(self, cls: int) -> list[Box]:
        return [box for c, box in self.boxes if c == cls]


def read_class_names(path: str | Path) -> list[str]:
    """Class names, one a line. Places365's `/a/abbey 0` lines become `abbey`; other lines are kept whole."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DissectionError(f"cannot read class names from {path}: {error}") from None
    names = []
    for line in lines:
        head, _, tail = line.rpartition(" ")
        if head and tail.isdigit() and head.startswith("/") and " " not in head:
            names.append(head.split("/", 2)[-1])
        else:
            names.append(line)
    if not names:
        raise DissectionError(f"{path} holds no class names")
    return names


def _checked_box(values: Sequence[int], width: int, height: int, where: str) -> Box:
    box = Box(*values)
    if box.x1 > box.x2 or box.y1 > box.y2:
        raise ProbeSetError(f"{where}: box {tuple(box)} has x1 > x2 or y1 > y2")
    if box.x1 < 0 or box.y1 < 0 or box.x2 >= width or box.y2 >= height:
        raise ProbeSetError(f"{where}: box {tuple(box)} lies outside the {width} x {height} image")
    return box


def _image_size(path: Path, where: str) -> tuple[int, int]:
    if not path.is_file():
        raise ProbeSetError(f"{where}: image {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as error:
        raise ProbeSetError(f"{where}: cannot read image {path} ({error})") from None


def read_box_csv(probe_set: str | Path) -> tuple[list[Sample], list[str]]:
    """Samples of a synthetic probe set: boxes.csv (image,class,name,x1,y1,x2,y2) and classes.txt.

    An image's main class is the class of its first row, as the toy model is trained on.
    """
    probe_set = Path(probe_set)
    boxes_file, classes_file = probe_set / "boxes.csv", probe_set / "classes.txt"
    for path in (boxes_file, classes_file):
        if not path.is_file():
            raise ProbeSetError(f"{path} is missing")
    classes = read_class_names(classes_file)
    rows: dict[str, list[tuple[int, Box]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    with boxes_file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "class", "x1", "y1", "x2", "y2"} - set(reader.fieldnames or [])
        if missing:
            raise ProbeSetError(f"{boxes_file}: missing columns {sorted(missing)}")
        for row_number, row in enumerate(reader, start=2):
            where = f"{boxes_file} row {row_number}"
            try:
                cls = int(row["class"])
                values = [int(row[key]) for key in ("x1", "y1", "x2", "y2")]
            except (TypeError, ValueError):
                raise ProbeSetError(f"{where}: class and x1, y1, x2, y2 must be integers") from None
            if not 0 <= cls < len(classes):
                raise ProbeSetError(f"{where}: class {cls} is not in {classes_file} ({len(classes)} classes)")
            name = row["image"]
            if name not in sizes:
                sizes[name] = _image_size(probe_set / "images" / name, where)
            rows.setdefault(name, []).append((cls, _checked_box(values, *sizes[name], where)))
    if not rows:
        raise ProbeSetError(f"{boxes_file} has no boxes")
    samples = [
        Sample(probe_set / "images" / name, name, *sizes[name], label=boxes[0][0], boxes=tuple(boxes))
        for name, boxes in rows.items()
    ]
    return samples, classes


def _xml_int(node: ET.Element, tag: str, where: str) -> int:
    text = node.findtext(tag)
    try:
        return round(float(text or ""))
    except ValueError:
        raise ProbeSetError(f"{where}: <{tag}> is missing or not a number") from None


def _is_voc(root: ET.Element) -> bool:
    database = (root.findtext("source/database") or "") + " " + (root.findtext("folder") or "")
    return "VOC" in database.upper() or "PASCAL" in database.upper()


def read_xml_boxes(
    annotations: str | Path, images: str | Path, classes: Sequence[str], *, one_based: bool | None = None
) -> list[Sample]:
    """Samples from a folder of PASCAL VOC or ILSVRC XML files, with the images in `images`.

    Object names are looked up in `classes` (for ILSVRC, lines like `n01440764 tench` match by their first
    word). VOC counts pixels from 1 and is shifted to 0; ILSVRC is read as 0-based; `one_based` overrides.
    An image's main class is the one whose boxes cover the most area.
    """
    annotations, images = Path(annotations), Path(images)
    files = sorted(annotations.glob("*.xml"))
    if not files:
        raise ProbeSetError(f"{annotations} holds no .xml annotation files")
    index: dict[str, int] = {}
    for i, name in enumerate(classes):
        index.setdefault(name, i)
        index.setdefault(name.split(" ", 1)[0], i)
    samples = []
    for path in files:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as error:
            raise ProbeSetError(f"{path}: not valid XML ({error})") from None
        filename = root.findtext("filename") or path.stem
        image = images / filename
        if not image.suffix and not image.is_file():
            candidates = (image.with_suffix(suffix) for suffix in (".JPEG", ".jpg", ".jpeg", ".png"))
            image = next((c for c in candidates if c.is_file()), image)
        width, height = _image_size(image, str(path))
        shift = 1 if (one_based if one_based is not None else _is_voc(root)) else 0
        boxes = []
        for number, obj in enumerate(root.iter("object"), start=1):
            where = f"{path} object {number}"
            name = (obj.findtext("name") or "").strip()
            if name not in index:
                raise ProbeSetError(
                    f"{where}: class {name!r} is not one of the model's {len(classes)} classes"
                )
            node = obj.find("bndbox")
            if node is None:
                raise ProbeSetError(f"{where}: no <bndbox>")
            values = [_xml_int(node, tag, where) - shift for tag in ("xmin", "ymin", "xmax", "ymax")]
            x1, y1, x2, y2 = values
            values = [max(0, x1), max(0, y1), min(width - 1, x2), min(height - 1, y2)]
            boxes.append((index[name], _checked_box(values, width, height, where)))
        if not boxes:
            raise ProbeSetError(f"{path}: no objects")
        area: dict[int, int] = {}
        for cls, box in boxes:
            area[cls] = area.get(cls, 0) + box.area
        label = max(area, key=lambda c: (area[c], -c))
        samples.append(Sample(image, image.name, width, height, label, tuple(boxes)))
    return samples


# ------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Case:
    """One image's outcome: the CAM box for its true class and the best IoU with a box of that class."""

    sample: Sample
    predicted: int
    probability: float
    box: Box
    iou: float
    raw: np.ndarray

    @property
    def class_right(self) -> bool:
        return self.predicted == self.sample.label

    @property
    def box_right(self) -> bool:
        return self.iou >= IOU_CORRECT


def best_iou(box: Box, truth: Sequence[Box]) -> float:
    return max((iou(box, other) for other in truth), default=0.0)


def localization_metrics(cases: Sequence[Case]) -> dict[str, float | int]:
    """Top-1 localization (class and box right), GT-known localization, and the two baselines, as fractions.

    The centred-box baseline uses the mean relative size of the true-class boxes over the set: a centre prior
    that knows how large objects are.
    """
    if not cases:
        raise DissectionError("no images to score")
    truths = [case.sample.boxes_of(case.sample.label) for case in cases]
    pairs = list(zip(cases, truths, strict=True))
    rel_w = float(np.mean([b.width / c.sample.width for c, t in pairs for b in t]))
    rel_h = float(np.mean([b.height / c.sample.height for c, t in pairs for b in t]))
    full = [best_iou(full_image_box(c.sample.width, c.sample.height), t) >= IOU_CORRECT for c, t in pairs]
    centre = [
        best_iou(centred_box(c.sample.width, c.sample.height, rel_w, rel_h), t) >= IOU_CORRECT
        for c, t in pairs
    ]
    n = len(cases)
    return {
        "images": n,
        "classification_top1": sum(c.class_right for c in cases) / n,
        "top1_localization": sum(c.class_right and c.box_right for c in cases) / n,
        "gt_known_localization": sum(c.box_right for c in cases) / n,
        "full_image_gt_known": sum(full) / n,
        "centre_box_gt_known": sum(centre) / n,
    }


def _batches(samples: Sequence[Sample], batch_size: int, size: int | None) -> Iterator[list[Sample]]:
    """Consecutive samples, cut where the input size would change (when images keep their own size)."""
    batch: list[Sample] = []
    for sample in samples:
        if batch and (
            len(batch) == batch_size
            or (size is None and (sample.width, sample.height) != (batch[0].width, batch[0].height))
        ):
            yield batch
            batch = []
        batch.append(sample)
    if batch:
        yield batch


def localize(
    model: nn.Module,
    samples: Sequence[Sample],
    *,
    method: str = "cam",
    layer: str | None = None,
    size: int | None = None,
    batch_size: int = 32,
    fraction: float = THRESHOLD,
    progress: bool = True,
) -> list[Case]:
    """Score every sample: one forward pass per batch, maps for each image's true class.

    Images are resized to `size` x `size` (or kept at their own size when None); boxes are found on the map
    upsampled to the original image, so they compare with the ground truth directly.
    """
    if method not in {"cam", "gradcam"}:
        raise DissectionError(f"unknown method {method!r}; use cam or gradcam")
    if not samples:
        raise DissectionError("no images to localize")
    compute: Callable[[torch.Tensor, torch.Tensor], CamResult] | None = None
    cases: list[Case] = []
    bar = tqdm(total=len(samples), desc="localize", unit="image", disable=not progress)
    try:
        for batch in _batches(samples, batch_size, size):
            pictures = [load_image(sample.image) for sample in batch]
            inputs = preprocess(pictures, size)
            labels = torch.tensor([sample.label for sample in batch])
            if compute is None:
                compute = _method(model, inputs[:1], method, layer)
            result = compute(inputs, labels)
            predicted = result.logits.argmax(dim=1).cpu()
            probability = result.probabilities.max(dim=1).values.cpu()
            for i, sample in enumerate(batch):
                raw = result.maps[i, 0].detach().float().cpu().numpy()
                box = cam_box(raw, sample.height, sample.width, fraction)
                cases.append(
                    Case(
                        sample,
                        int(predicted[i]),
                        float(probability[i]),
                        box,
                        best_iou(box, sample.boxes_of(sample.label)),
                        raw,
                    )
                )
            bar.update(len(batch))
    finally:
        bar.close()
    return cases


def _method(
    model: nn.Module, example: torch.Tensor, method: str, layer: str | None
) -> Callable[[torch.Tensor, torch.Tensor], CamResult]:
    """Detect the head (or Grad-CAM layer) once, then compute maps batch by batch."""
    if method == "cam":
        head: GapHead = detect_gap_head(model, example)
        return lambda images, labels: class_activation_maps(model, images, classes=labels, head=head)
    relu = False
    if layer is None:
        layer, relu = gradcam_layer(model, example)
    return lambda images, labels: grad_cams(model, images, classes=labels, layer=layer, relu=relu)


# -------------------------------------------------------------------------------------------- outputs


def write_atomically(files: Mapping[Path, bytes]) -> None:
    """Write every file under a temporary name first, then move them all in: nothing is left half written.

    Files get the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    umask = os.umask(0)
    os.umask(umask)
    temporaries: dict[Path, str] = {}
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
            temporaries[path] = temporary
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.chmod(temporary, 0o666 & ~umask)
        for path, temporary in temporaries.items():
            os.replace(temporary, path)
    finally:
        for temporary in temporaries.values():
            Path(temporary).unlink(missing_ok=True)


def _case_image(case: Case, classes: Sequence[str]) -> Image.Image:
    picture = load_image(case.sample.image)
    label, predicted = case.sample.label, case.predicted
    lines = [
        f"true: {_name(classes, label)}",
        f"pred: {_name(classes, predicted)} {case.probability:.2f}",
        f"IoU {case.iou:.2f}",
    ]
    overlay = render_overlay(picture, case.raw, lines=lines, highlight=None if case.class_right else 1)
    scale = overlay.width / picture.width
    truth = [(box, (40, 220, 40)) for box in case.sample.boxes_of(label)]
    return draw_boxes(overlay, [*truth, (case.box, (230, 30, 30))], scale=scale)


def _name(classes: Sequence[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else f"class {index}"


def _percent_or_count(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{100 * value:.1f} %"


def write_report(
    out: str | Path, cases: Sequence[Case], classes: Sequence[str], *, gallery: int = 8
) -> dict[str, float | int]:
    """Write metrics.json, cases.csv and gallery.html (the `gallery` best and worst cases by IoU) into `out`.

    Everything is written to a temporary folder first and moved in at the end, metrics.json last.
    """
    out = Path(out)
    metrics = localization_metrics(cases)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".partial-"))
    try:
        ranked = sorted(cases, key=lambda c: (-c.iou, c.sample.name))
        best = ranked[:gallery]
        rest = ranked[len(best) :]
        worst = sorted(rest[max(0, len(rest) - gallery) :], key=lambda c: (c.iou, c.sample.name))
        (staging / "gallery").mkdir()
        sections = []
        for title, chosen in (("Best", best), ("Worst", worst)):
            figures: list[str] = []
            for case in chosen:
                file_name = f"{title.lower()}-{len(figures):02d}.png"
                _case_image(case, classes).save(staging / "gallery" / file_name)
                figures.append(
                    f'<figure><img src="gallery/{file_name}" alt="{html.escape(case.sample.name)}">'
                    f"<figcaption>{html.escape(case.sample.name)} · IoU {case.iou:.2f}</figcaption></figure>"
                )
            if figures:
                grid = "".join(figures)
                sections.append(f"<h2>{title} {len(figures)} by IoU</h2>\n<div class=grid>{grid}</div>")
        rows = "".join(
            f"<tr><td>{html.escape(key)}</td><td>{_percent_or_count(value)}</td></tr>"
            for key, value in metrics.items()
        )
        (staging / "gallery.html").write_text(
            "<!doctype html><meta charset=utf-8><title>CAM localization</title>"
            "<style>body{font-family:sans-serif;margin:2em}.grid{display:flex;flex-wrap:wrap;gap:8px}"
            "figure{margin:0}figcaption{font-size:12px}td{padding:2px 12px}</style>"
            "<h1>CAM localization</h1><p>Green: ground-truth boxes of the true class. Red: the CAM box "
            f"(largest 8-connected region above {THRESHOLD:.0%} of the map's max).</p>"
            f"<table>{rows}</table>\n" + "\n".join(sections) + "\n",
            encoding="utf-8",
        )
        with (staging / "cases.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "label", "predicted", "probability", "x1", "y1", "x2", "y2", "iou"])
            for case in cases:
                writer.writerow(
                    [
                        case.sample.name,
                        case.sample.label,
                        case.predicted,
                        f"{case.probability:.4f}",
                        *case.box,
                        f"{case.iou:.4f}",
                    ]
                )
        if (out / "gallery").exists():
            shutil.rmtree(out / "gallery")
        for name in ("gallery", "gallery.html", "cases.csv"):
            os.replace(staging / name, out / name)
        write_atomically({out / "metrics.json": (json.dumps(metrics, indent=2) + "\n").encode()})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics
