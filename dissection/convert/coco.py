"""COCO to Broden: instance annotations (polygons and RLE, decoded by pycocotools), COCO-Stuff and panoptic.

    python -m dissection convert coco annotations/instances_val2017.json OUT \
        [--extra annotations/stuff_val2017.json]
    python -m dissection convert coco annotations/panoptic_val2017.json OUT

SRC is an annotation JSON; `--images` defaults to the folder COCO unpacks beside annotations/ (`val2017/` for
`*_val2017.json`) and `--panoptic-masks` to the PNG folder named like the panoptic JSON. `--extra` adds more
instance-format JSON over the same images (COCO-Stuff's stuff_*.json). A JSON with `segments_info` in its
annotations is panoptic: each segment id = R + 256·G + 256²·B of its PNG pixels, 0 unlabelled.

Labels are COCO's categories, numbered 1, 2, … in order of category id (every category of the JSON, shown or
not, so a subset converts to the same numbers); names are COCO's (`wall-other-merged` stays as it is).
COCO-Stuff's `other` (id 183) marks unlabelled stuff and is dropped. A category is a thing when `isthing` is
1 (panoptic), or, without `isthing`, when its supercategory is not a stuff one below. Things → `object`; stuff
by supercategory (override with `--stuff-category SUPER=CATEGORY`):

| COCO stuff supercategory                               | category   | why                                |
|--------------------------------------------------------|------------|------------------------------------|
| textile, plant, raw-material, food-stuff, solid, water | `material` | what a surface is made of (as      |
|                                                        |            | Broden's OpenSurfaces materials:   |
|                                                        |            | fabric, food, foliage, water, …)   |
| floor, wall, ceiling, sky, ground, window, building,   | `region`   | the layout of a scene: surfaces    |
| structural, furniture-stuff                            |            | and structures, uncountable        |

Overlapping instances of different labels go to separate layers (`writer.stack_masks`); crowd annotations
(iscrowd = 1) are kept, they are pixels of their category too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils  # type: ignore[import-untyped]

from dissection.convert.folder import image_size_of, load_picture
from dissection.convert.writer import (
    Annotation,
    ConvertError,
    Label,
    SourceImage,
    ordered_categories,
    stack_masks,
)

STUFF_CATEGORIES: dict[str, str] = {
    **dict.fromkeys(("textile", "plant", "raw-material", "food-stuff", "solid", "water"), "material"),
    **dict.fromkeys(
        (
            "floor",
            "wall",
            "ceiling",
            "sky",
            "ground",
            "window",
            "building",
            "structural",
            "furniture-stuff",
        ),
        "region",
    ),
}
"""COCO stuff supercategory → Broden category (see the table above)."""

UNLABELLED = {"other"}
"""COCO-Stuff's catch-all category: not a concept."""


@dataclass
class _Image:
    id: int
    file_name: str
    height: int
    width: int
    where: str
    instances: list[tuple[int, int, Any]] = field(default_factory=list)  # (annotation id, category, segm)
    panoptic: tuple[str, dict[int, int]] | None = None  # (PNG file, segment id → category id)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConvertError(f"annotation file {path} does not exist")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConvertError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ConvertError(f"{path}: not a COCO annotation file (the top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise ConvertError(f"{path}: lacks the {key!r} list of a COCO annotation file")
    return document


def _int(record: Any, key: str, where: str) -> int:
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConvertError(f"{where}: field {key!r} is {value!r}, not an integer")
    return value


def _str(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise ConvertError(f"{where}: field {key!r} is {value!r}, not a name")
    return value


def _check_segmentation(segmentation: Any, image: _Image, where: str) -> None:
    """Polygons: lists of at least three x, y pairs; RLE: `counts` (list or string) and `size` = [h, w]."""
    if isinstance(segmentation, list):
        if not segmentation:
            raise ConvertError(f"{where}: segmentation is an empty list of polygons")
        for polygon in segmentation:
            if (
                not isinstance(polygon, list)
                or len(polygon) < 6
                or len(polygon) % 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in polygon)
            ):
                raise ConvertError(f"{where}: a polygon must list at least three x, y pairs of numbers")
        return
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise ConvertError(f"{where}: segmentation is neither polygons nor an RLE with counts and size")
    if segmentation["size"] != [image.height, image.width]:
        raise ConvertError(
            f"{where}: RLE size {segmentation['size']} is not the image's [height, width] "
            f"[{image.height}, {image.width}]"
        )
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if (
            not all(isinstance(c, int) and c >= 0 for c in counts)
            or sum(counts) != image.height * image.width
        ):
            raise ConvertError(
                f"{where}: RLE counts must be non-negative integers summing to height x width = "
                f"{image.height * image.width}"
            )
    elif not isinstance(counts, str):
        raise ConvertError(f"{where}: RLE counts is neither a list nor a compressed string")


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """An instance segmentation (polygons, uncompressed or compressed RLE) as an h x w bool mask."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    with warnings.catch_warnings():  # pycocotools' array type predates NumPy 2's `copy` argument
        warnings.filterwarnings("ignore", category=DeprecationWarning, message="__array__ implementation")
        return np.asarray(mask_utils.decode(rle), bool)


class _Categories:
    """COCO categories by id, each with its Broden category (None: unlabelled)."""

    def __init__(self, stuff_categories: Mapping[str, str]) -> None:
        self.stuff = {**STUFF_CATEGORIES, **stuff_categories}
        self.records: dict[int, tuple[str, str | None, str]] = {}  # id → (name, category, where)

    def add(self, record: Any, where: str) -> None:
        category_id = _int(record, "id", where)
        where = f"{where} id {category_id}"
        name = _str(record, "name", where)
        supercategory = record.get("supercategory") or ""
        if name in UNLABELLED and supercategory in UNLABELLED | {""}:
            category: str | None = None
        elif record.get("isthing") == 1 or ("isthing" not in record and supercategory not in self.stuff):
            category = "object"
        elif supercategory in self.stuff:
            category = self.stuff[supercategory]
        else:
            raise ConvertError(
                f"{where} ({name!r}): stuff supercategory {supercategory!r} has no Broden category; "
                f"map it with --stuff-category {supercategory or 'SUPER'}=material (or region)"
            )
        known = self.records.get(category_id)
        if known is not None and known[:2] != (name, category):
            raise ConvertError(f"{where}: is {name!r} here but {known[0]!r} in {known[2]}")
        self.records[category_id] = (name, category, where)

    def labels(self) -> tuple[list[Label], dict[int, int]]:
        """Labels numbered by category id, and category id → label number."""
        labels: list[Label] = []
        numbers: dict[int, int] = {}
        for category_id in sorted(self.records):
            name, category, _ = self.records[category_id]
            if category is not None:
                numbers[category_id] = len(labels) + 1
                labels.append(Label(len(labels) + 1, name, category))
        return labels, numbers


def _split(path: Path) -> str:
    return "val" if "val" in path.stem else "train"


def _default_images(path: Path) -> Path:
    """COCO's layout: annotations/instances_val2017.json → val2017/ beside annotations/."""
    return path.parent.parent / path.stem.split("_", 1)[-1]


def coco_images(
    annotations: str | Path,
    *,
    images: str | Path | None = None,
    extra: Sequence[str | Path] = (),
    panoptic_masks: str | Path | None = None,
    stuff_categories: Mapping[str, str] | None = None,
    split: str | None = None,
) -> tuple[list[Label], list[str], list[SourceImage]]:
    """The label table, categories and images of COCO annotation files, every record checked (and every
    image and panoptic PNG found) before anything is written."""
    main = Path(annotations)
    image_root = Path(images) if images is not None else _default_images(main)
    if not image_root.is_dir():
        raise ConvertError(f"image folder {image_root} does not exist; name it with --images")
    categories = _Categories(stuff_categories or {})
    records: dict[int, _Image] = {}
    panoptic = False
    for index, path in enumerate([main, *map(Path, extra)]):
        document = _read_json(path)
        for record in document["categories"]:
            categories.add(record, f"{path.name} category")
        for record in document["images"]:
            _add_image(records, record, path)
        kind = any(isinstance(a, dict) and "segments_info" in a for a in document["annotations"])
        if index == 0:
            panoptic = kind
        elif kind or panoptic:
            raise ConvertError(f"{path}: --extra files must be instance-format JSON over a non-panoptic SRC")
        if kind:
            masks = Path(panoptic_masks) if panoptic_masks is not None else path.with_suffix("")
            if not masks.is_dir():
                raise ConvertError(
                    f"panoptic PNG folder {masks} does not exist; name it with --panoptic-masks"
                )
            for record in document["annotations"]:
                _add_panoptic(records, categories, record, path, masks)
        else:
            for record in document["annotations"]:
                _add_instance(records, categories, record, path)
    labels, numbers = categories.labels()
    items = []
    for image in sorted(records.values(), key=lambda r: r.id):
        size = image_size_of(image_root / image.file_name, image.where)
        if size != (image.height, image.width):
            raise ConvertError(
                f"{image.where}: {image_root / image.file_name} is {size[0]}x{size[1]}, the JSON says "
                f"height x width = {image.height}x{image.width}"
            )
        stem = Path(image.file_name).with_suffix("").as_posix()
        items.append(
            SourceImage(stem, split or _split(main), image.where, _loader(image, image_root, numbers))
        )
    return labels, ordered_categories(label.category for label in labels), items


def _add_image(records: dict[int, _Image], record: Any, path: Path) -> None:
    image_id = _int(record, "id", f"{path.name} image")
    where = f"{path.name} image id {image_id}"
    image = _Image(
        image_id,
        _str(record, "file_name", where),
        _int(record, "height", where),
        _int(record, "width", where),
        where,
    )
    if image.height < 1 or image.width < 1:
        raise ConvertError(f"{where}: height and width must be positive")
    known = records.get(image_id)
    if known is None:
        records[image_id] = image
    elif (known.file_name, known.height, known.width) != (image.file_name, image.height, image.width):
        raise ConvertError(f"{where}: differs from {known.where} ({known.file_name})")


def _image_of(records: dict[int, _Image], record: dict[str, Any], where: str) -> _Image:
    image_id = _int(record, "image_id", where)
    if image_id not in records:
        raise ConvertError(f"{where}: image_id {image_id} is not in images")
    return records[image_id]


def _category_of(categories: _Categories, record: dict[str, Any], where: str) -> int:
    category_id = _int(record, "category_id", where)
    if category_id not in categories.records:
        raise ConvertError(f"{where}: category_id {category_id} is not in categories")
    return category_id


def _add_instance(records: dict[int, _Image], categories: _Categories, record: Any, path: Path) -> None:
    annotation_id = _int(record, "id", f"{path.name} annotation")
    where = f"{path.name} annotation id {annotation_id}"
    image = _image_of(records, record, where)
    category_id = _category_of(categories, record, where)
    _check_segmentation(record.get("segmentation"), image, where)
    image.instances.append((annotation_id, category_id, record["segmentation"]))


def _add_panoptic(
    records: dict[int, _Image], categories: _Categories, record: Any, path: Path, masks: Path
) -> None:
    image_id = _int(record, "image_id", f"{path.name} annotation")
    where = f"{path.name} annotation for image_id {image_id}"
    image = _image_of(records, record, where)
    if image.panoptic is not None:
        raise ConvertError(f"{where}: the image has another panoptic annotation")
    png = masks / _str(record, "file_name", where)
    if not png.is_file():
        raise ConvertError(f"{where}: panoptic PNG {png} is missing")
    segments: dict[int, int] = {}
    for segment in record.get("segments_info") or []:
        segment_id = _int(segment, "id", f"{where} segment")
        segment_where = f"{where} segment id {segment_id}"
        if segment_id in segments:
            raise ConvertError(f"{segment_where}: repeated")
        segments[segment_id] = _category_of(categories, segment, segment_where)
    image.panoptic = (png.as_posix(), segments)


def _loader(image: _Image, root: Path, numbers: dict[int, int]) -> Callable[[], Annotation]:
    def load() -> Annotation:
        picture = load_picture(root / image.file_name, (image.height, image.width), image.where)
        shape = (image.height, image.width)
        masks = []
        for _, category_id, segmentation in sorted(image.instances, key=lambda item: item[0]):
            if category_id in numbers:
                masks.append((numbers[category_id], decode_segmentation(segmentation, *shape)))
        layers: list[tuple[str | None, np.ndarray]] = [(None, layer) for layer in stack_masks(masks, shape)]
        if image.panoptic is not None:
            layers.append((None, _panoptic_layer(image, numbers)))
        return Annotation(picture, layers)

    return load


def _panoptic_layer(image: _Image, numbers: dict[int, int]) -> np.ndarray:
    """Label numbers from a panoptic PNG: segment id = R + 256·G + 256²·B → its category's label."""
    assert image.panoptic is not None
    png, segments = image.panoptic
    try:
        with Image.open(png) as opened:
            if (opened.height, opened.width) != (image.height, image.width):
                raise ConvertError(
                    f"{png}: panoptic PNG is {opened.height}x{opened.width}, {image.where} is "
                    f"{image.height}x{image.width}"
                )
            rgb = np.asarray(opened.convert("RGB")).astype(np.int64)
    except ConvertError:
        raise
    except Exception as error:  # Pillow raises many types for a corrupt file
        raise ConvertError(f"{png}: cannot decode panoptic PNG ({error})") from None
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    present = np.unique(ids)
    lookup_ids = np.array(sorted(segments), np.int64)
    missing = [int(i) for i in present if i and i not in segments]
    if missing:
        raise ConvertError(f"{png}: segment id {missing[0]} is not in segments_info of {image.where}")
    labels = np.array([numbers.get(segments[int(i)], 0) for i in lookup_ids], np.int64)
    layer = np.zeros(ids.shape, np.int64)
    if lookup_ids.size:
        position = np.searchsorted(lookup_ids, ids)
        found = (ids > 0) & (position < lookup_ids.size)
        layer[found] = labels[position[found]]
    return layer
