"""The generic folder format: your own images and label masks.

    SRC/images/<name>.<jpg|png|…>    the pictures (subfolders allowed; Pillow reads the format)
    SRC/masks/<name>.png             label numbers per pixel, the picture's size (0 = unlabelled)
    SRC/masks2/<name>.png, masks3/…  optional further layers, for labels that overlap the first (parts)
    SRC/labels.csv                   number,name,category[,synonyms]  (synonyms `;`-separated)
    SRC/image_labels.csv             optional: image,label  (image-level labels such as a scene)

A mask's pixel value is its label number: the value itself for 8-bit (L, P) and 16/32-bit grey (I;16, I)
PNGs, R + 256·G for RGB(A) PNGs as Broden writes them. `--void N` makes value N unlabelled (VOC's 255). Label
numbers are kept as labels.csv gives them; a mask layer holding labels of several categories is split per
category. An image needs a mask or a row in image_labels.csv.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from dissection.convert.writer import (
    MAX_LABEL,
    Annotation,
    ConvertError,
    Label,
    SourceImage,
    ordered_categories,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, by relative path."""
    if not root.is_dir():
        raise ConvertError(f"image folder {root} does not exist")
    found = sorted(
        path.relative_to(root)
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    if not found:
        raise ConvertError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def image_size_of(path: Path, where: str) -> tuple[int, int]:
    """(h, w) from the file's header, without decoding it."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except FileNotFoundError:
        raise ConvertError(f"{where}: image file {path} is missing") from None
    except Exception as error:  # Pillow raises many types for a foreign file
        raise ConvertError(f"{where}: cannot read image {path} ({error})") from None


def load_picture(path: Path, size: tuple[int, int], where: str) -> Image.Image:
    """The decoded RGB picture, checked against the (h, w) its annotation was made for."""
    try:
        with Image.open(path) as image:
            if (image.height, image.width) != size:
                raise ConvertError(
                    f"{where}: image {path} is {image.height}x{image.width}, its annotation is for "
                    f"{size[0]}x{size[1]}"
                )
            return image.convert("RGB")
    except ConvertError:
        raise
    except FileNotFoundError:
        raise ConvertError(f"{where}: image file {path} is missing") from None
    except Exception as error:  # Pillow raises many types for a corrupt file
        raise ConvertError(f"{where}: cannot decode image {path} ({error})") from None


def load_any_picture(path: Path, where: str) -> Image.Image:
    """A decoded RGB picture of any size."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ConvertError(f"{where}: image file {path} is missing") from None
    except Exception as error:  # Pillow raises many types for a corrupt file
        raise ConvertError(f"{where}: cannot decode image {path} ({error})") from None


def read_labels(path: Path) -> list[Label]:
    """labels.csv: number,name,category[,synonyms]."""
    if not path.is_file():
        raise ConvertError(f"{path} is missing: it names the labels (number,name,category[,synonyms])")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in ("number", "name", "category") if f not in (reader.fieldnames or [])]
        if missing:
            raise ConvertError(f"{path}: header lacks column(s) {', '.join(missing)}")
        labels: dict[int, Label] = {}
        for row_number, row in enumerate(reader, start=2):
            text = (row["number"] or "").strip()
            if not text.isdigit() or not 1 <= int(text) <= MAX_LABEL:
                raise ConvertError(
                    f"{path} row {row_number}: number {text!r} is not an integer in 1..{MAX_LABEL}"
                )
            number = int(text)
            if number in labels:
                raise ConvertError(f"{path} row {row_number}: label number {number} is repeated")
            name, category = (row["name"] or "").strip(), (row["category"] or "").strip()
            if not name or not category:
                raise ConvertError(f"{path} row {row_number}: label {number} needs a name and a category")
            syns = tuple(s.strip() for s in (row.get("synonyms") or "").split(";") if s.strip())
            labels[number] = Label(number, name, category, syns)
    if not labels:
        raise ConvertError(f"{path}: lists no labels")
    return [labels[number] for number in sorted(labels)]


def decode_mask(path: Path, where: str) -> np.ndarray:
    """A mask PNG as h x w int64 label numbers (see the module docstring for the encodings)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in ("L", "P", "1", "I;16", "I;16B", "I;16L", "I"):
                return np.asarray(image).astype(np.int64)
            if mode in ("RGB", "RGBA"):
                rgb = np.asarray(image.convert("RGB")).astype(np.int64)
                return rgb[..., 0] + 256 * rgb[..., 1]
    except FileNotFoundError:
        raise ConvertError(f"{where}: mask {path} is missing") from None
    except Exception as error:  # Pillow raises many types for a corrupt file
        raise ConvertError(f"{where}: cannot decode mask {path} ({error})") from None
    raise ConvertError(f"{where}: mask {path} has mode {mode}; use 8- or 16-bit grey, palette or RGB")


def _image_labels(path: Path, names: set[str], labels: dict[int, Label]) -> dict[str, list[int]]:
    scalars: dict[str, list[int]] = {}
    if not path.is_file():
        return scalars
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in ("image", "label") if f not in (reader.fieldnames or [])]
        if missing:
            raise ConvertError(f"{path}: header lacks column(s) {', '.join(missing)}")
        for row_number, row in enumerate(reader, start=2):
            image, text = (row["image"] or "").strip(), (row["label"] or "").strip()
            if image not in names:
                raise ConvertError(f"{path} row {row_number}: image {image!r} is not under images/")
            if not text.isdigit() or int(text) not in labels:
                raise ConvertError(f"{path} row {row_number}: label {text!r} is not a number in labels.csv")
            scalars.setdefault(image, []).append(int(text))
    return scalars


def mask_folders(src: Path) -> list[Path]:
    """masks/, then masks2/, masks3/, … as long as they exist."""
    folders = [src / "masks"]
    k = 2
    while (src / f"masks{k}").is_dir():
        folders.append(src / f"masks{k}")
        k += 1
    return folders


def folder_images(
    src: str | Path, *, void: int | None = None
) -> tuple[list[Label], list[str], list[SourceImage]]:
    """The label table, categories and images of a folder-format dataset, every file's presence and size
    checked before anything is written."""
    src = Path(src)
    if not src.is_dir():
        raise ConvertError(f"source folder {src} does not exist")
    labels = read_labels(src / "labels.csv")
    by_number = {label.number: label for label in labels}
    pictures = list_images(src / "images")
    names = {path.as_posix() for path in pictures}
    scalars = _image_labels(src / "image_labels.csv", names, by_number)
    folders = mask_folders(src)
    images = []
    for relative in pictures:
        name = relative.as_posix()
        where = f"images/{name}"
        size = image_size_of(src / "images" / relative, where)
        masks = [folder / relative.with_suffix(".png") for folder in folders]
        masks = [mask for mask in masks if mask.is_file()]
        if not masks and name not in scalars:
            expected = (folders[0] / relative.with_suffix(".png")).relative_to(src)
            raise ConvertError(f"{where}: has no mask (expected {expected}) and no row in image_labels.csv")
        for mask in masks:
            mask_size = image_size_of(mask, f"{mask.relative_to(src)}")
            if mask_size != size:
                raise ConvertError(
                    f"{mask.relative_to(src)}: mask is {mask_size[0]}x{mask_size[1]} but {where} is "
                    f"{size[0]}x{size[1]}; a mask must have its image's size"
                )
        images.append(
            SourceImage(
                relative.with_suffix("").as_posix(),
                "train",
                where,
                _loader(src, relative, size, masks, scalars.get(name, []), by_number, void),
            )
        )
    return labels, ordered_categories(label.category for label in labels), images


def _loader(
    src: Path,
    relative: Path,
    size: tuple[int, int],
    masks: list[Path],
    scalars: list[int],
    labels: dict[int, Label],
    void: int | None,
) -> Callable[[], Annotation]:
    def load() -> Annotation:
        picture = load_picture(src / "images" / relative, size, f"images/{relative.as_posix()}")
        layers: list[tuple[str | None, np.ndarray]] = []
        for mask in masks:
            where = mask.relative_to(src).as_posix()
            layer = decode_mask(mask, where)
            if void is not None:
                layer = np.where(layer == void, 0, layer)
            present = np.unique(layer)
            unknown = [int(n) for n in present if n != 0 and int(n) not in labels]
            if unknown:
                raise ConvertError(f"{where}: label number {unknown[0]} is not in labels.csv")
            layers.append((None, layer))
        return Annotation(picture, layers, [(labels[n].category, n) for n in scalars])

    return load
