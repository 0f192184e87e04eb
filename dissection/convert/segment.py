"""A probe set from unlabelled images and a segmenter (the approach of davidbau/dissect): the segmenter's
classes are the concepts, its per-pixel predictions the masks.

`classes.csv` lists the segmenter's output channels in order, `name,category`; a row with an empty category
(background, void) is not a concept and its pixels stay unlabelled. Each pixel takes the class of highest
softmax probability, at the mask size (logits upsampled bilinearly); with `thresholds` the pixel is labelled
only where that probability is at least t. One threshold gives one label per class; several give one per
class and threshold, named `<class>@<t>`, each threshold in its own layer, so a unit can be matched against
the segmenter's confident regions and its loose ones. Numbering: concept classes in channel order, each
class's thresholds in the order given.

`segment_folder` writes the set with the Broden writer; `SegmenterLabels` yields the same labels in memory,
as the `ImageLabels` batches the tally counts, so no PNG needs to be written: `image_folder` is the folder's
images as a probe set without labels, and `dissection.pipeline.dissect(image_folder(...), labels=
SegmenterLabels(segmenter))` dissects on it (the `dissection.data.LabelSource` the tally takes).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dissection.broden import ProbeImage, ProbeSet
from dissection.convert.folder import list_images, load_any_picture
from dissection.convert.writer import (
    MAX_LABEL,
    Annotation,
    BrodenWriter,
    ConvertError,
    Label,
    SourceImage,
    batched,
    check_names,
    ordered_categories,
    progress_bar,
    resize_picture,
)
from dissection.data import ImageLabels, image_batches, label_sets
from dissection.errors import DissectionError, ModelError, ProbeSetError
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.sources import resolve_device


@dataclasses.dataclass(frozen=True)
class SegmenterClass:
    """One output channel: its name and Broden category (None: not a concept)."""

    name: str
    category: str | None


def read_classes(path: str | Path) -> list[SegmenterClass]:
    """classes.csv: `name,category`, one row per output channel in order."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"classes file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in ("name", "category") if f not in (reader.fieldnames or [])]
        if missing:
            raise ConvertError(f"{path}: header lacks column(s) {', '.join(missing)}")
        classes = []
        for row_number, row in enumerate(reader, start=2):
            name = (row["name"] or "").strip()
            if not name:
                raise ConvertError(f"{path} row {row_number}: the class needs a name")
            classes.append(SegmenterClass(name, (row["category"] or "").strip() or None))
    if not any(c.category for c in classes):
        raise ConvertError(f"{path}: no class has a category, so there is no concept to label")
    return classes


class Segmenter:
    """A segmentation model and its classes: `layers(pixels)` gives the label layers of a batch."""

    def __init__(
        self,
        model: nn.Module,
        classes: Sequence[SegmenterClass],
        *,
        mask_size: tuple[int, int],
        thresholds: Sequence[float] = (0.0,),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str = "auto",
        where: str = "the segmenter",
    ) -> None:
        if (
            not thresholds
            or any(not 0.0 <= t < 1.0 for t in thresholds)
            or len(set(thresholds)) != len(thresholds)
        ):
            raise ConvertError(f"thresholds {list(thresholds)} must be distinct numbers in [0, 1)")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.classes = list(classes)
        self.mask_size = mask_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.where = where
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.labels: list[Label] = []
        self.numbers = np.zeros((len(self.classes), len(self.thresholds)), np.int64)
        for j, cls in enumerate(self.classes):
            if cls.category is None:
                continue
            for i, t in enumerate(self.thresholds):
                number = len(self.labels) + 1
                name = cls.name if len(self.thresholds) == 1 else f"{cls.name}@{t:g}"
                self.labels.append(Label(number, name, cls.category))
                self.numbers[j, i] = number
        if len(self.labels) > MAX_LABEL:
            raise ConvertError(f"{len(self.labels)} labels do not fit a Broden PNG (at most {MAX_LABEL})")
        self.categories = ordered_categories(label.category for label in self.labels)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's N x classes x h x w output for N x 3 x H x W pixels in [0, 1], checked."""
        with torch.no_grad():
            output: Any = self.model((pixels.to(self.device) - self.mean) / self.std)
        if isinstance(output, Mapping) and "out" in output:  # torchvision segmentation models
            output = output["out"]
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ModelError(f"{self.where} outputs {shape}; a segmenter must output N x classes x h x w")
        if output.shape[1] != len(self.classes):
            raise ModelError(
                f"{self.where} outputs {output.shape[1]} classes but the classes file lists "
                f"{len(self.classes)}; they must match, one row per output channel"
            )
        return output.float()

    def layers(self, pixels: torch.Tensor) -> np.ndarray:
        """N x thresholds x sh x sw label numbers (0 unlabelled) for N x 3 x H x W pixels in [0, 1]."""
        logits = F.interpolate(self.logits(pixels), size=self.mask_size, mode="bilinear", align_corners=False)
        confidence, best = torch.softmax(logits, dim=1).max(dim=1)
        numbers = torch.from_numpy(self.numbers).to(best.device)[best]  # N x sh x sw x thresholds
        keep = confidence.unsqueeze(-1) >= torch.tensor(self.thresholds, device=best.device)
        return torch.where(keep, numbers, 0).permute(0, 3, 1, 2).cpu().numpy()


def image_labels(index: int, layers: np.ndarray) -> ImageLabels:
    """One image's label layers (k x sh x sw) as the tally's `ImageLabels`, exactly as
    `ProbeSet.load_labels` and the tally's label workers would make them from the written PNGs."""
    flat = layers.reshape(layers.shape[0], -1)
    numbers = np.unique(flat[flat > 0]).astype(np.int64)
    onehot = np.zeros((numbers.size, flat.shape[1]), np.uint8)
    position = np.arange(flat.shape[1])
    for layer in flat:
        labelled = layer > 0
        onehot[np.searchsorted(numbers, layer[labelled]), position[labelled]] = 1
    combos, pixel_combo = label_sets(onehot)
    return ImageLabels(
        index, numbers, onehot.sum(1, dtype=np.int64), torch.from_numpy(combos), torch.from_numpy(pixel_combo)
    )


class SegmenterLabels:
    """A label source for the tally that segments the probe set's images instead of reading label PNGs
    (`dissection.data.LabelSource`).

    `relabel(probe)` is the probe set with the segmenter's labels, categories and mask size (its images
    unchanged); `stream(probe, indices, batch_size=…)` yields lists of `ImageLabels` in the order of
    `indices`, the contract of `dissection.data.label_stream`:
    `tally(source, labels.relabel(probe), thresholds, label_source=labels)`. A generator dissection keeps the
    labels it segmented while generating instead (`dissection.gan.samples`), from the same `relabel`.
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter

    def relabel(self, probe: ProbeSet) -> ProbeSet:
        labels = self.segmenter.labels
        categories = tuple(self.segmenter.categories)
        names = ["", *(label.name for label in labels)]
        category = np.array([-1, *(categories.index(label.category) for label in labels)], np.int64)
        return dataclasses.replace(
            probe,
            categories=categories,
            label_names=tuple(names),
            label_category=category,
            mask_size=self.segmenter.mask_size,
        )

    def stream(
        self,
        probe: ProbeSet,
        indices: Sequence[int] | np.ndarray,
        *,
        batch_size: int,
        workers: int | None = 0,
    ) -> Iterator[list[ImageLabels]]:
        for rows, pixels in image_batches(probe, indices, batch_size=batch_size, workers=workers):
            layers = self.segmenter.layers(pixels)
            yield [image_labels(int(index), layers[b]) for b, index in enumerate(rows)]


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolder(ProbeSet):
    """The images under `root` (any size, searched recursively, in `list_images` order) as a probe set
    without labels, each image resized to `image_size` as `segment_folder` resizes it."""

    def path(self, name: str) -> Path:
        return self.root / name

    def load_image(self, index: int) -> np.ndarray:
        record = self.images[index]
        try:
            picture = load_any_picture(self.path(record.image), record.image)
        except ConvertError as error:
            raise ProbeSetError(str(error)) from None
        return np.asarray(resize_picture(picture, self.image_size))


def image_folder(src: str | Path, image_size: tuple[int, int]) -> ImageFolder:
    """A folder of images as a probe set to label with `SegmenterLabels(...).relabel`."""
    src = Path(src)
    images = tuple(ProbeImage(i, path.as_posix(), (), ()) for i, path in enumerate(list_images(src)))
    return ImageFolder(
        root=src,
        images=images,
        categories=(),
        label_names=("",),
        label_category=np.full(1, -1, np.int64),
        image_size=image_size,
        mask_size=image_size,
    )


def segment_folder(
    src: str | Path,
    out: str | Path,
    segmenter: Segmenter,
    *,
    image_size: tuple[int, int],
    image_format: str = "jpg",
    batch_size: int = 8,
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    report: Callable[[int, int], None] | None = None,
) -> Path:
    """Segment every image under `src` (resized to `image_size`) and write the probe set to `out`,
    resumably (`BrodenWriter`), with a progress bar (and `report(done, total)` after each batch)."""
    src = Path(src)
    pictures = list_images(src)
    items = [
        SourceImage(
            path.with_suffix("").as_posix(),
            "train",
            path.as_posix(),
            functools.partial(_segment_one, segmenter, src / path, path.as_posix(), image_size),
        )
        for path in pictures
    ]
    check_names(items, segmenter.categories)
    writer = BrodenWriter(
        out,
        source="segment",
        labels=segmenter.labels,
        categories=segmenter.categories,
        image_size=image_size,
        mask_size=segmenter.mask_size,
        image_format=image_format,
        options=options,
    )
    try:
        todo = [
            (item, path) for item, path in zip(items, pictures, strict=True) if not writer.done(item.stem)
        ]
        with progress_bar(len(items), len(items) - len(todo), "segment", progress) as bar:
            for chunk in batched(todo, batch_size):
                resized = [
                    resize_picture(load_any_picture(src / path, item.where), image_size)
                    for item, path in chunk
                ]
                layers = segmenter.layers(_pixels(resized))
                for (item, _), picture, image_layers in zip(chunk, resized, layers, strict=True):
                    writer.add(item, Annotation(picture, [(None, layer) for layer in image_layers]))
                    bar.update(1)
                if report is not None:
                    report(bar.n, len(items))
        return writer.finish(items)
    except DissectionError as error:
        raise writer.failed(error) from None
    except BaseException:
        writer.discard_if_empty()
        raise
    finally:
        writer.close()


def _segment_one(segmenter: Segmenter, path: Path, where: str, image_size: tuple[int, int]) -> Annotation:
    """One image on its own (`segment_folder` segments whole batches instead)."""
    picture = resize_picture(load_any_picture(path, where), image_size)
    return Annotation(picture, [(None, layer) for layer in segmenter.layers(_pixels([picture]))[0]])


def _pixels(pictures: Sequence[Image.Image]) -> torch.Tensor:
    """N x 3 x H x W floats in [0, 1] from RGB pictures of one size."""
    stacked = np.stack([np.asarray(picture) for picture in pictures])
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0)
