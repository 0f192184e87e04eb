"""Pascal-Context and Pascal-Part (the annotations of PASCAL VOC 2010 images) to Broden: objects and parts.

Pascal-Context (Mottaghi et al. 2014, trainval.tar.gz):

    SRC/labels.txt            the 459 classes, `N: name` per line (N = the value in the label maps)
    SRC/59_labels.txt         optional: the 59-class subset (`N: name`), used with `classes=59`
    SRC/trainval/<id>.mat     per image, `LabelMap`: h x w class numbers of labels.txt (0 unlabelled)
    SRC/trainval/<id>.png     or the same map as an 8/16-bit grey PNG (the Detail API's export)
    IMAGES/<id>.jpg           the VOC 2010 picture (default IMAGES: SRC/JPEGImages)

Every class is an `object` (Broden lists Pascal-Context's things and stuff alike as objects). Label numbers
are labels.txt's; with `classes=59` only the 59 classes are kept (numbered as in 59_labels.txt) and every
other pixel is unlabelled.

Pascal-Part (Chen et al. 2014, trainval.tar.gz):

    SRC/Annotations_Part/<id>.mat   per image, `anno`: `imname`, and `objects`, each with `class` (a VOC
                                    class name), `mask` (h x w, nonzero on the object) and `parts`, each
                                    with `part_name` and `mask`
    IMAGES/<id>.jpg                 the VOC 2010 picture (default IMAGES: SRC/JPEGImages)

Objects are `object` labels named by their VOC class, parts `part` labels named by their part name (a part
name shared by classes, "head" of a person or a dog, is one label, as in Broden). Numbering: the 20 VOC
classes in VOC's order (1..20, each listed even when no image shows it), then the part names found, sorted.
Overlapping objects or parts go to further layers (`stack_masks`), so no pixel's label is lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dissection.convert.folder import image_size_of, load_picture
from dissection.convert.writer import Annotation, ConvertError, Label, SourceImage, stack_masks

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""Pascal VOC's classes in its order: Pascal-Part's object label numbers 1..20."""

_LABEL_LINE = re.compile(r"\s*(\d+)\s*:\s*(\S.*?)\s*")


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io

    try:
        return dict(scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False))
    except Exception as error:  # scipy raises many types for a file that is not a MATLAB file
        raise ConvertError(f"{path}: not a readable MATLAB .mat file ({error})") from None


def _images_folder(src: Path, images: str | Path | None) -> Path:
    folder = Path(images) if images is not None else src / "JPEGImages"
    if not folder.is_dir():
        raise ConvertError(f"image folder {folder} does not exist (the VOC 2010 JPEGImages; set --images)")
    return folder


def _picture(folder: Path, stem: str, where: str) -> Path:
    for suffix in (".jpg", ".jpeg", ".png"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise ConvertError(f"{where}: image {stem}.jpg is missing from {folder}")


def read_label_list(path: Path) -> dict[int, str]:
    """`N: name` lines (Pascal-Context's labels.txt and 59_labels.txt) as {N: name}."""
    if not path.is_file():
        raise ConvertError(f"{path} is missing: Pascal-Context's class list (`N: name` per line)")
    names: dict[int, str] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = _LABEL_LINE.fullmatch(line)
        if match is None:
            raise ConvertError(f"{path} line {line_number}: {line!r} is not `N: name`")
        number, name = int(match.group(1)), match.group(2)
        if number < 1 or number in names:
            raise ConvertError(f"{path} line {line_number}: class number {number} is below 1 or repeated")
        names[number] = name
    if not names:
        raise ConvertError(f"{path}: lists no classes")
    return names


def _context_map(path: Path) -> np.ndarray:
    """A Pascal-Context label map: `LabelMap` of a .mat, or a grey PNG's values."""
    if path.suffix == ".png":
        try:
            with Image.open(path) as image:
                if image.mode not in ("L", "P", "I", "I;16"):
                    raise ConvertError(f"{path}: label map has mode {image.mode}, not a grey PNG")
                return np.asarray(image).astype(np.int64)
        except ConvertError:
            raise
        except Exception as error:  # Pillow raises many types for a corrupt file
            raise ConvertError(f"{path}: cannot decode ({error})") from None
    document = _loadmat(path)
    label_map = document.get("LabelMap")
    if not isinstance(label_map, np.ndarray) or label_map.ndim != 2 or label_map.dtype.kind not in "iuf":
        raise ConvertError(f"{path}: lacks `LabelMap`, an h x w array of class numbers")
    return label_map.astype(np.int64)


def pascal_context_images(
    src: str | Path, *, images: str | Path | None = None, classes: str = "459"
) -> tuple[list[Label], list[str], list[SourceImage]]:
    """The label table, categories and images of a Pascal-Context folder; every label map is read and
    checked (sizes, class numbers) before anything is written."""
    src = Path(src)
    if classes not in ("459", "59"):
        raise ConvertError(f"Pascal-Context classes {classes!r}: choose 459 or 59")
    if not src.is_dir():
        raise ConvertError(f"Pascal-Context folder {src} does not exist")
    full = read_label_list(src / "labels.txt")
    lookup = np.zeros(max(full) + 1, np.int64)
    if classes == "59":
        subset = read_label_list(src / "59_labels.txt")
        by_name = {name: number for number, name in full.items()}
        for number, name in subset.items():
            if name not in by_name:
                raise ConvertError(f"{src / '59_labels.txt'}: class {name!r} is not in labels.txt")
            lookup[by_name[name]] = number
        table = subset
    else:
        lookup[list(full)] = list(full)
        table = full
    labels = [Label(number, name, "object") for number, name in sorted(table.items())]
    known = np.zeros(lookup.size, bool)
    known[[0, *full]] = True
    folder = _images_folder(src, images)
    maps = sorted(p for p in (src / "trainval").glob("*") if p.suffix in (".mat", ".png"))
    if not (src / "trainval").is_dir() or not maps:
        raise ConvertError(f"{src / 'trainval'}: holds no label maps (<id>.mat or <id>.png)")
    entries = []
    for path in maps:
        label_map = _context_map(path)
        outside = (label_map < 0) | (label_map >= known.size)
        bad = np.unique(label_map[outside | ~known[np.where(outside, 0, label_map)]])
        if bad.size:
            raise ConvertError(f"{path}: class number {int(bad[0])} is not in {src / 'labels.txt'}")
        picture = _picture(folder, path.stem, str(path))
        size = image_size_of(picture, str(path))
        if label_map.shape != size:
            raise ConvertError(
                f"{path}: label map is {label_map.shape[0]}x{label_map.shape[1]} but {picture.name} is "
                f"{size[0]}x{size[1]}"
            )
        entries.append(
            SourceImage(path.stem, "train", str(path), _context_loader(path, picture, size, lookup))
        )
    return labels, ["object"], entries


def _context_loader(
    path: Path, picture: Path, size: tuple[int, int], lookup: np.ndarray
) -> Callable[[], Annotation]:
    def load() -> Annotation:
        layer = lookup[_context_map(path)]
        return Annotation(load_picture(picture, size, str(path)), [("object", layer)])

    return load


def _records(value: Any) -> list[Any]:
    """A MATLAB struct array as loaded with squeeze_me: one struct, an array of them, or empty."""
    if isinstance(value, np.ndarray):
        return list(value.reshape(-1))
    return [] if value is None else [value]


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
        return str(value.reshape(-1)[0]).strip() or None
    return None


def _mask(record: Any, where: str, size: tuple[int, int] | None) -> np.ndarray:
    mask = getattr(record, "mask", None)
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise ConvertError(f"{where}: lacks `mask`, an h x w array")
    if size is not None and mask.shape != size:
        raise ConvertError(
            f"{where}: mask is {mask.shape[0]}x{mask.shape[1]}, the image is {size[0]}x{size[1]}"
        )
    return mask != 0


def _part_annotation(path: Path) -> tuple[str, list[tuple[str, Any, list[tuple[str, Any]]]]]:
    """(imname, [(class, object struct, [(part name, part struct)])]) of one Annotations_Part .mat."""
    anno = _loadmat(path).get("anno")
    if anno is None or not hasattr(anno, "objects"):
        raise ConvertError(f"{path}: lacks `anno` with its `objects`")
    imname = _text(getattr(anno, "imname", None)) or path.stem
    objects = []
    for index, record in enumerate(_records(anno.objects)):
        where = f"{path} object {index + 1}"
        name = _text(getattr(record, "class", None))
        if name not in VOC_CLASSES:
            raise ConvertError(f"{where}: class {name!r} is not a Pascal VOC class")
        parts = []
        for k, part in enumerate(_records(getattr(record, "parts", None))):
            part_name = _text(getattr(part, "part_name", None))
            if part_name is None:
                raise ConvertError(f"{where} part {k + 1}: lacks `part_name`")
            parts.append((part_name, part))
        objects.append((name, record, parts))
    return imname, objects


def pascal_part_images(
    src: str | Path, *, images: str | Path | None = None
) -> tuple[list[Label], list[str], list[SourceImage]]:
    """The label table, categories and images of a Pascal-Part folder; every annotation is read and every
    mask's size checked before anything is written."""
    src = Path(src)
    annotations = src / "Annotations_Part"
    if not annotations.is_dir():
        raise ConvertError(f"Pascal-Part folder {annotations} does not exist")
    mats = sorted(annotations.glob("*.mat"))
    if not mats:
        raise ConvertError(f"{annotations}: holds no annotations (<id>.mat)")
    folder = _images_folder(src, images)
    part_names: set[str] = set()
    found = []
    for path in mats:
        imname, objects = _part_annotation(path)
        picture = _picture(folder, imname, str(path))
        size = image_size_of(picture, str(path))
        for index, (_, record, parts) in enumerate(objects):
            _mask(record, f"{path} object {index + 1}", size)
            for k, (part_name, part) in enumerate(parts):
                _mask(part, f"{path} object {index + 1} part {k + 1} ({part_name})", size)
                part_names.add(part_name)
        found.append((path, picture, size))
    labels = [Label(number, name, "object") for number, name in enumerate(VOC_CLASSES, start=1)]
    part_numbers = {name: len(VOC_CLASSES) + i for i, name in enumerate(sorted(part_names), start=1)}
    labels += [Label(number, name, "part") for name, number in part_numbers.items()]
    entries = [
        SourceImage(path.stem, "train", str(path), _part_loader(path, picture, size, part_numbers))
        for path, picture, size in found
    ]
    return labels, ["object", "part"], entries


def _part_loader(
    path: Path, picture: Path, size: tuple[int, int], part_numbers: dict[str, int]
) -> Callable[[], Annotation]:
    def load() -> Annotation:
        _, objects = _part_annotation(path)
        object_masks: list[tuple[int, np.ndarray]] = []
        part_masks: list[tuple[int, np.ndarray]] = []
        for index, (name, record, parts) in enumerate(objects):
            where = f"{path} object {index + 1}"
            object_masks.append((VOC_CLASSES.index(name) + 1, _mask(record, where, size)))
            part_masks += [
                (part_numbers[n], _mask(part, f"{where} part {k + 1}", size))
                for k, (n, part) in enumerate(parts)
            ]
        layers: list[tuple[str | None, np.ndarray]] = [
            ("object", layer) for layer in stack_masks(object_masks, size)
        ]
        layers += [("part", layer) for layer in stack_masks(part_masks, size)]
        return Annotation(load_picture(picture, size, str(path)), layers)

    return load
