"""Writing a Broden-format probe set once for every source: resizing, encoding, statistics, resuming.

A converter gives the label table and, per image, a loader of its picture and label layers at the source's
resolution (`SourceImage`); the writer does the rest, in the format `dissection.broden` reads:

- the picture is resized to the image size (bilinear; untouched when it already has that size) and saved as
  `images/<source>/<stem>.jpg` (or `.png`); each label layer is resized to the mask size by nearest
  neighbour (mask pixel (i, j) takes the source pixel under its centre, row ⌊(2i+1)·h / 2·sh⌋) and saved as
  `images/<source>/<stem>_<category>[_<k>].png`, label number = R + 256·G. A layer of category None is
  split by each label's own category; an all-zero layer is not written.
- statistics, as Broden keeps them: per label and category, `frequency` = images where the label appears in
  that category and `coverage` = the sum over images of the fraction of the mask it covers there (an
  image-level label covers 1). `c_<category>.csv` lists the labels that appear in the category (and those
  declared in it that appear nowhere, with zeros), so `load_probe_set` gives each label the category where
  it covers most. `label.csv`'s `category` cell is `object(12);part(3)` (images per category).
- nothing half written: everything goes to OUT's hidden sibling `.<name>.partial/`, which replaces OUT (absent
  or empty) when complete. Each finished image appends one line to `progress.jsonl` there after its files
  are written, so a rerun with the same options skips it (a torn last line is dropped and the image
  redone); a rerun with other options, or on an OUT made from another source, is refused. A finished OUT
  holds `convert.json` (source, options, label table); a rerun that matches it does nothing.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from dissection.errors import DissectionError

BRODEN_CATEGORIES = ("color", "object", "part", "material", "region", "scene", "texture")
"""The order categories get in category.csv when a source names several (others follow, as first seen)."""

T = TypeVar("T")

MAX_LABEL = 65535
"""The largest label number a Broden PNG can hold (R + 256·G)."""


class ConvertError(DissectionError):
    """A source dataset cannot be converted: a file, record, field or label is missing or malformed."""


@dataclass(frozen=True)
class Label:
    """A concept of the probe set: `category` is where it is listed when no image shows it."""

    number: int
    name: str
    category: str
    syns: tuple[str, ...] = ()


@dataclass
class Annotation:
    """One image as a source gives it: the picture, its label layers (category or None, h x w label
    numbers, any resolution) and its image-level labels (category, number)."""

    picture: Image.Image
    layers: list[tuple[str | None, np.ndarray]] = field(default_factory=list)
    scalars: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class SourceImage:
    """An image to convert: `stem` names its files (unique, '/'-separated, no extension); `where` names it
    in the source for error messages; `load` reads it."""

    stem: str
    split: str
    where: str
    load: Callable[[], Annotation]


def ordered_categories(names: Iterable[str]) -> list[str]:
    """Distinct category names, Broden's first (color, object, part, material, region, scene, texture)."""
    seen = list(dict.fromkeys(names))
    return [c for c in BRODEN_CATEGORIES if c in seen] + [c for c in seen if c not in BRODEN_CATEGORIES]


def resize_nearest(layer: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Label numbers resized by nearest neighbour: output pixel (i, j) reads the source pixel under its
    centre, in exact integer arithmetic."""
    h, w = layer.shape
    sh, sw = size
    if (h, w) == (sh, sw):
        return layer
    rows = ((2 * np.arange(sh) + 1) * h) // (2 * sh)
    cols = ((2 * np.arange(sw) + 1) * w) // (2 * sw)
    return layer[rows[:, None], cols[None, :]]


def stack_masks(masks: Iterable[tuple[int, np.ndarray]], shape: tuple[int, int]) -> list[np.ndarray]:
    """Binary masks (label number, h x w bool) as few label layers as overlaps allow: each pixel of a mask
    goes to the first layer where it is free or already carries that label, so every (pixel, label) pair is
    kept exactly once (a person over a horse: two layers; two overlapping people: one)."""
    layers: list[np.ndarray] = []
    for number, mask in masks:
        left = np.asarray(mask, bool).copy()
        for layer in layers:
            if not left.any():
                break
            free = left & ((layer == 0) | (layer == number))
            layer[free] = number
            left &= ~free
        if left.any():
            layer = np.zeros(shape, np.int32)
            layer[left] = number
            layers.append(layer)
    return layers


def resize_picture(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    """RGB at (h, w) = `size`, bilinear; a picture already that size is kept pixel for pixel."""
    picture = picture.convert("RGB")
    if (picture.height, picture.width) == size:
        return picture
    return picture.resize((size[1], size[0]), Image.Resampling.BILINEAR)


def encode_layer(layer: np.ndarray) -> Image.Image:
    """Broden's label PNG: label number = R + 256·G."""
    rgb = np.zeros((*layer.shape, 3), np.uint8)
    rgb[..., 0] = layer % 256
    rgb[..., 1] = layer // 256
    return Image.fromarray(rgb, "RGB")


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _write_json(path: Path, document: object) -> None:
    """Whole or not at all: written beside, then renamed."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=1))
    os.replace(partial, path)


class BrodenWriter:
    """A probe set under construction in OUT's `.partial` sibling; `finish` renames it to OUT.

    Use `done(stem)` to skip finished images, `add` for each other image, `finish` with every image in
    index.csv order. Raises `ConvertError` for a label table or an option set that does not fit.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        source: str,
        labels: Sequence[Label],
        categories: Sequence[str],
        image_size: tuple[int, int],
        mask_size: tuple[int, int],
        image_format: str = "jpg",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.out = Path(out)
        self.source = source
        self.categories = list(categories)
        self.image_size, self.mask_size = image_size, mask_size
        self.image_format = image_format
        if image_format not in ("jpg", "png"):
            raise ConvertError(f"image format {image_format!r} is not jpg or png")
        if min(*image_size, *mask_size) < 1:
            raise ConvertError(f"image size {image_size} and mask size {mask_size} must be positive")
        self.labels = {label.number: label for label in labels}
        self._check_labels(labels)
        self.category_of = np.full(max(self.labels, default=0) + 1, -1, np.int64)
        for label in labels:
            self.category_of[label.number] = self.categories.index(label.category)
        manifest: dict[str, Any] = {
            "source": source,
            "options": {
                **dict(options or {}),
                "image_size": list(image_size),
                "mask_size": list(mask_size),
                "image_format": image_format,
            },
            "categories": self.categories,
            "labels": [[label.number, label.name, label.category, list(label.syns)] for label in labels],
        }
        self.manifest = json.loads(json.dumps(manifest, default=str))  # as it reads back from convert.json
        self.partial = self.out.parent / f".{self.out.name}.partial"
        self.records: dict[str, dict[str, Any]] = {}
        self.complete = self._finished()
        if not self.complete:
            self._open_partial()

    def _check_labels(self, labels: Sequence[Label]) -> None:
        if len(self.labels) != len(labels):
            numbers = [label.number for label in labels]
            repeated = next(n for n in numbers if numbers.count(n) > 1)
            raise ConvertError(f"label number {repeated} is given to two labels")
        for label in labels:
            if not 1 <= label.number <= MAX_LABEL:
                raise ConvertError(
                    f"label {label.name!r}: number {label.number} is outside 1..{MAX_LABEL} (R + 256·G)"
                )
            if label.category not in self.categories:
                raise ConvertError(f"label {label.name!r}: category {label.category!r} is not declared")
            if not label.name or any(ch in label.name for ch in "\r\n"):
                raise ConvertError(f"label number {label.number}: name {label.name!r} is empty or multiline")

    def _finished(self) -> bool:
        """True when OUT is a finished conversion with these options; refuses any other non-empty OUT."""
        if not self.out.exists():
            return False
        if not self.out.is_dir():
            raise ConvertError(f"{self.out} exists and is not a folder")
        manifest = self.out / "convert.json"
        if manifest.is_file():
            if json.loads(manifest.read_text()) == self.manifest:
                return True
            raise ConvertError(
                f"{self.out} holds a conversion with other options or labels ({manifest}); "
                "remove it or choose another folder"
            )
        if any(self.out.iterdir()):
            raise ConvertError(f"{self.out} exists and is not empty; remove it or choose another folder")
        return False

    def _open_partial(self) -> None:
        manifest = self.partial / "convert.json"
        if manifest.is_file():
            if json.loads(manifest.read_text()) != self.manifest:
                raise ConvertError(
                    f"{self.partial} holds a conversion started with other options or labels; rerun with "
                    "the same options to resume, or remove it to start over"
                )
            self.records = self._read_progress()
        else:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            (self.partial / "images" / self.source).mkdir(parents=True)
            _write_json(manifest, self.manifest)
        progress = self.partial / "progress.jsonl"
        lines = "".join(json.dumps(record) + "\n" for record in self.records.values())
        partial = progress.with_name(".progress.jsonl.partial")
        partial.write_text(lines)
        os.replace(partial, progress)
        self.progress = progress.open("a", encoding="utf-8")

    def _read_progress(self) -> dict[str, dict[str, Any]]:
        """Finished images from progress.jsonl; a torn last line (an interrupted append) is dropped."""
        records: dict[str, dict[str, Any]] = {}
        path = self.partial / "progress.jsonl"
        if not path.is_file():
            return records
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "stem" in record:
                records[record["stem"]] = record
        return records

    def done(self, stem: str) -> bool:
        return self.complete or stem in self.records

    def add(self, image: SourceImage, annotation: Annotation) -> None:
        """Write one image's files, then record it in progress.jsonl."""
        if self.complete or image.stem in self.records:
            return
        folder = self.partial / "images" / self.source
        name = f"{image.stem}.{self.image_format}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        picture = resize_picture(annotation.picture, self.image_size)
        if self.image_format == "jpg":
            picture.save(folder / name, format="JPEG", quality=95)
        else:
            picture.save(folder / name, format="PNG")
        by_category = self._layers(image, annotation.layers)
        record: dict[str, Any] = {
            "stem": image.stem,
            "image": f"{self.source}/{name}",
            "split": image.split,
            "layers": {},
            "scalars": {},
            "pixels": {},
        }
        for category, layers in by_category.items():
            files = []
            for k, layer in enumerate(layers, start=1):
                file_name = f"{image.stem}_{category}{'' if k == 1 else f'_{k}'}.png"
                encode_layer(layer).save(folder / file_name)
                files.append(f"{self.source}/{file_name}")
            record["layers"][category] = files
            record["pixels"][category] = _union_counts(layers)
        for category, number in annotation.scalars:
            self._check_number(image, number)
            if category not in self.categories:
                raise ConvertError(f"{image.where}: category {category!r} is not declared")
            numbers = record["scalars"].setdefault(category, [])
            if number not in numbers:
                numbers.append(number)
        self.progress.write(json.dumps(record) + "\n")
        self.progress.flush()
        self.records[image.stem] = record

    def _check_number(self, image: SourceImage, number: int) -> None:
        if number not in self.labels:
            raise ConvertError(f"{image.where}: label number {number} is not in the label table")

    def _layers(
        self, image: SourceImage, layers: Sequence[tuple[str | None, np.ndarray]]
    ) -> dict[str, list[np.ndarray]]:
        """Each layer at the mask size, split by category where it has none, all-zero layers dropped."""
        out: dict[str, list[np.ndarray]] = {}
        for category, layer in layers:
            small = resize_nearest(np.asarray(layer, np.int64), self.mask_size)
            present = np.unique(small)
            present = present[present != 0]
            in_table = (present > 0) & (present < self.category_of.size)
            unknown = present[self.category_of[np.where(in_table, present, 0)] < 0]  # entry 0 is -1
            if unknown.size:
                self._check_number(image, int(unknown[0]))
            if not present.size:
                continue
            if category is not None:
                if category not in self.categories:
                    raise ConvertError(f"{image.where}: category {category!r} is not declared")
                out.setdefault(category, []).append(small)
                continue
            cats = self.category_of[small]
            for index in np.unique(self.category_of[present]):
                out.setdefault(self.categories[index], []).append(np.where(cats == index, small, 0))
        return {category: out[category] for category in self.categories if category in out}

    def finish(self, order: Sequence[SourceImage]) -> Path:
        """Write the index and label files for `order` (every image, in index.csv order) and rename the
        partial folder to OUT."""
        if self.complete:
            return self.out
        missing = [image.where for image in order if image.stem not in self.records]
        if missing:
            raise ConvertError(f"{len(missing)} image(s) were not converted, the first {missing[0]}")
        self.progress.close()
        records = [self.records[image.stem] for image in order]
        self._write_tables(records)
        _write_json(self.partial / "convert.json", self.manifest)
        (self.partial / "progress.jsonl").unlink()
        if self.out.exists():
            self.out.rmdir()  # empty, checked when opened
        os.replace(self.partial, self.out)
        self.complete = True
        return self.out

    def failed(self, error: DissectionError) -> DissectionError:
        """The error to raise when converting stops on `error`: the same, saying where the finished images
        wait, or (none finished) after removing the partial folder."""
        if self.complete or self.records:
            done = len(self.records)
            return type(error)(f"{error}\n{done} finished image(s) wait in {self.partial}; rerun to resume")
        self.discard_if_empty()
        return error

    def discard_if_empty(self) -> None:
        """Remove the partial folder when no image in it is finished: there is nothing to resume."""
        if not self.complete and not self.records and self.partial.exists():
            self.close()
            shutil.rmtree(self.partial, ignore_errors=True)

    def close(self) -> None:
        """Stop appending (the partial folder stays, to resume)."""
        progress = getattr(self, "progress", None)
        if progress is not None and not progress.closed:
            progress.close()

    def _write_tables(self, records: Sequence[dict[str, Any]]) -> None:
        mask_pixels = self.mask_size[0] * self.mask_size[1]
        cats = self.categories
        frequency = {cat: dict.fromkeys(self.labels, 0) for cat in cats}
        coverage = {cat: dict.fromkeys(self.labels, 0.0) for cat in cats}
        images_with = dict.fromkeys(cats, 0)
        any_frequency = dict.fromkeys(self.labels, 0)
        rows = []
        for record in records:
            seen: set[int] = set()
            row = [record["image"], record["split"], *self.image_size, *self.mask_size]
            for cat in cats:
                counts = {int(n): c for n, c in record["pixels"].get(cat, {}).items()}
                scalars = record["scalars"].get(cat, [])
                for number, count in counts.items():
                    frequency[cat][number] += 1
                    coverage[cat][number] += count / mask_pixels
                for number in scalars:
                    if number not in counts:
                        frequency[cat][number] += 1
                    coverage[cat][number] += 1.0 - counts.get(number, 0) / mask_pixels
                images_with[cat] += bool(counts or scalars)
                seen.update(counts, scalars)
                row.append(";".join([*record["layers"].get(cat, []), *map(str, scalars)]))
            for number in seen:
                any_frequency[number] += 1
            rows.append(row)
        _write_csv(self.partial / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", *cats], rows)
        numbers = sorted(self.labels)
        label_rows = []
        for number in numbers:
            label = self.labels[number]
            field = ";".join(f"{cat}({frequency[cat][number]})" for cat in cats if frequency[cat][number])
            label_rows.append(
                [
                    number,
                    label.name,
                    field or f"{label.category}(0)",
                    any_frequency[number],
                    f"{sum(coverage[cat][number] for cat in cats):.6f}",
                    ";".join(label.syns),
                ]
            )
        _write_csv(
            self.partial / "label.csv",
            ["number", "name", "category", "frequency", "coverage", "syns"],
            label_rows,
        )
        category_rows = []
        for cat in cats:
            members = [
                n
                for n in numbers
                if frequency[cat][n] or (self.labels[n].category == cat and not any_frequency[n])
            ]
            _write_csv(
                self.partial / f"c_{cat}.csv",
                ["code", "number", "name", "frequency", "coverage"],
                [
                    [code, n, self.labels[n].name, frequency[cat][n], f"{coverage[cat][n]:.6f}"]
                    for code, n in enumerate(members, start=1)
                ],
            )
            category_rows.append(
                [cat, min(members, default=0), max(members, default=0), len(members), images_with[cat]]
            )
        _write_csv(
            self.partial / "category.csv", ["name", "first", "last", "count", "frequency"], category_rows
        )


def _union_counts(layers: Sequence[np.ndarray]) -> dict[str, int]:
    """Pixels per label over one category's layers, a pixel counted once even if two layers repeat it."""
    stack = np.stack(layers).reshape(len(layers), -1)
    counts = {}
    for number in np.unique(stack[stack > 0]):
        counts[str(int(number))] = int((stack == number).any(axis=0).sum())
    return counts


def write_probe_set(
    out: str | Path,
    images: Sequence[SourceImage],
    *,
    source: str,
    labels: Sequence[Label],
    categories: Sequence[str],
    image_size: tuple[int, int],
    mask_size: tuple[int, int],
    image_format: str = "jpg",
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    report: Callable[[int, int], None] | None = None,
) -> Path:
    """Convert every image (loading each with its `load`), skipping those a previous run finished, with a
    progress bar (and `report(done, total)` after each image); returns OUT. A failure before any image is
    finished leaves no partial folder either."""
    stems = [image.stem for image in images]
    if len(set(stems)) != len(stems):
        repeated = next(image for image in images if stems.count(image.stem) > 1)
        raise ConvertError(f"{repeated.where}: another image has the same name {repeated.stem!r}")
    if not images:
        raise ConvertError(f"{source}: no images to convert")
    check_names(images, categories)
    writer = BrodenWriter(
        out,
        source=source,
        labels=labels,
        categories=categories,
        image_size=image_size,
        mask_size=mask_size,
        image_format=image_format,
        options=options,
    )
    try:
        todo = [image for image in images if not writer.done(image.stem)]
        with progress_bar(len(images), len(images) - len(todo), f"convert {source}", progress) as bar:
            for image in todo:
                writer.add(image, image.load())
                bar.update(1)
                if report is not None:
                    report(bar.n, len(images))
        return writer.finish(images)
    except DissectionError as error:
        raise writer.failed(error) from None
    except BaseException:
        writer.discard_if_empty()
        raise
    finally:
        writer.close()


def check_names(images: Sequence[SourceImage], categories: Sequence[str]) -> None:
    """Refuse an image whose file would be another's label layer (`a_object.png` beside image `a`): a
    folder of Broden images and masks given as plain images, say."""
    stems = {image.stem for image in images}
    for image in images:
        base, _, suffix = image.stem.rpartition("_")
        if suffix.isdigit() and base:
            base, _, suffix = base.rpartition("_")
        if base in stems and suffix in categories:
            raise ConvertError(
                f"{image.where}: its name {image.stem!r} is the name of image {base!r}'s {suffix} mask; "
                "rename it, or leave label masks out of the image folder"
            )


def progress_bar(total: int, done: int, description: str, enabled: bool) -> Any:
    """A tqdm bar over images that starts at the `done` ones a previous run finished."""
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=description, unit="image", disable=not enabled)


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
