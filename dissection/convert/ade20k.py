"""ADE20K (the full dataset, ADE20K_2021_17_01 layout) to Broden: objects, parts and scenes.

    SRC/…/<name>.jpg           the picture (any depth below SRC: images/ADE/training/urban/street/…)
    SRC/…/<name>_seg.png       objects: class code = ⌊R/10⌋·256 + G (0 unlabelled); B encodes instances
    SRC/…/<name>_parts_<k>.png parts of level k (k = 1, 2, …), coded the same way
    SRC/…/<name>.json          the annotation: `object[*].name_ndx` is the class code of `object[*].name`,
                               `scene` the scene path (["outdoor", "urban", "street"])

Every `_seg.png` under SRC is an image. Class names come from the JSON files (a code must be named by at
least one, and named alike by all); ADE20K's WordNet names ("car, auto, automobile, machine, motorcar")
become name "car" with the rest as synonyms, and a first word shared by two codes gets the code appended
("pole (1843)"). Categories: the `_seg.png` classes are `object`, the `_parts_<k>.png` classes `part` (a class
can be both; `load_probe_set` then takes the one where it covers most), the last element of `scene` is an
image-level `scene` label named "<scene>-s" as in Broden (without it, the picture's folder name).

Numbering: object and part classes 1, 2, … in order of ADE20K class code, then scenes in name order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dissection.convert.folder import image_size_of, load_picture
from dissection.convert.writer import Annotation, ConvertError, Label, SourceImage

CATEGORIES = ["object", "part", "scene"]


@dataclass(frozen=True)
class _Entry:
    base: Path
    picture: Path
    parts: tuple[Path, ...]
    size: tuple[int, int]
    scene: str
    where: str


def decode_classes(path: Path, size: tuple[int, int], where: str) -> np.ndarray:
    """ADE20K class codes of a `_seg.png` or `_parts_<k>.png`: ⌊R/10⌋·256 + G."""
    try:
        with Image.open(path) as image:
            if (image.height, image.width) != size:
                raise ConvertError(
                    f"{path}: is {image.height}x{image.width}, its image is {size[0]}x{size[1]} ({where})"
                )
            rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    except ConvertError:
        raise
    except Exception as error:  # Pillow raises many types for a corrupt file
        raise ConvertError(f"{path}: cannot decode ({error})") from None
    return (rgb[..., 0] // 10) * 256 + rgb[..., 1]


def _annotation(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConvertError(f"{path} is missing: ADE20K's per-image JSON names the classes of its masks")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConvertError(f"{path}: not valid JSON ({error})") from None
    annotation = document.get("annotation") if isinstance(document, dict) else None
    if not isinstance(annotation, dict) or not isinstance(annotation.get("object", []), list):
        raise ConvertError(f"{path}: lacks the 'annotation' object with its 'object' list")
    return annotation


def _scene(annotation: dict[str, Any], picture: Path) -> str:
    scene = annotation.get("scene")
    if isinstance(scene, list) and scene and all(isinstance(s, str) for s in scene):
        return str(scene[-1])
    if isinstance(scene, str) and scene.strip("/"):
        return scene.strip("/").split("/")[-1]
    return picture.parent.name


def _split(path: Path) -> str:
    return "val" if "validation" in path.parts else "train"


def ade20k_images(src: str | Path) -> tuple[list[Label], list[str], list[SourceImage]]:
    """The label table, categories and images of an ADE20K folder, every JSON read and every mask's size
    checked before anything is written."""
    src = Path(src)
    if not src.is_dir():
        raise ConvertError(f"ADE20K folder {src} does not exist")
    segs = sorted(src.rglob("*_seg.png"))
    if not segs:
        raise ConvertError(f"{src}: holds no ADE20K images (no *_seg.png files)")
    names: dict[int, tuple[str, str]] = {}  # code → (ADE name, where)
    is_object: dict[int, bool] = {}
    entries = []
    for seg in segs:
        base = seg.with_name(seg.name.removesuffix("_seg.png"))
        where = base.relative_to(src).as_posix()
        picture = next((base.with_suffix(s) for s in (".jpg", ".png") if base.with_suffix(s).is_file()), None)
        if picture is None:
            raise ConvertError(f"{where}: image {base.name}.jpg is missing beside {seg.name}")
        json_path = base.with_suffix(".json")
        annotation = _annotation(json_path)
        for index, record in enumerate(annotation.get("object", [])):
            record_where = f"{json_path} object {index}"
            code, name = (
                (record.get("name_ndx"), record.get("name")) if isinstance(record, dict) else (None, None)
            )
            if not isinstance(code, int) or code < 1 or not isinstance(name, str) or not name.strip():
                raise ConvertError(f"{record_where}: needs an integer name_ndx >= 1 and a name")
            known = names.setdefault(code, (name, record_where))
            if known[0] != name:
                raise ConvertError(
                    f"{record_where}: name_ndx {code} is {name!r} here but {known[0]!r} in {known[1]}"
                )
            parts = record.get("parts")
            level = parts.get("part_level", 0) if isinstance(parts, dict) else 0
            is_object[code] = is_object.get(code, False) or level == 0
        size = image_size_of(picture, where)
        layers = [seg]
        k = 1
        while base.with_name(f"{base.name}_parts_{k}.png").is_file():
            layers.append(base.with_name(f"{base.name}_parts_{k}.png"))
            k += 1
        for layer in layers:
            layer_size = image_size_of(layer, where)
            if layer_size != size:
                raise ConvertError(
                    f"{layer}: mask is {layer_size[0]}x{layer_size[1]} but {picture.name} is "
                    f"{size[0]}x{size[1]}"
                )
        entries.append(_Entry(base, picture, tuple(layers[1:]), size, _scene(annotation, picture), where))
    labels = _class_labels(names, is_object)
    numbers = {code: i + 1 for i, code in enumerate(sorted(names))}
    scenes = sorted({entry.scene for entry in entries})
    scene_numbers = {scene: len(labels) + i + 1 for i, scene in enumerate(scenes)}
    labels += [Label(scene_numbers[scene], f"{scene}-s", "scene") for scene in scenes]
    images = [
        SourceImage(
            entry.base.name,
            _split(entry.base.relative_to(src)),
            entry.where,
            _loader(entry, numbers, scene_numbers[entry.scene]),
        )
        for entry in entries
    ]
    return labels, CATEGORIES, images


def _class_labels(names: dict[int, tuple[str, str]], is_object: dict[int, bool]) -> list[Label]:
    words = {code: [w.strip() for w in name.split(",") if w.strip()] for code, (name, _) in names.items()}
    firsts = [words[code][0] for code in names]
    labels = []
    for number, code in enumerate(sorted(names), start=1):
        first, *rest = words[code]
        name = f"{first} ({code})" if firsts.count(first) > 1 else first
        labels.append(Label(number, name, "object" if is_object[code] else "part", tuple(rest)))
    return labels


def _loader(entry: _Entry, numbers: dict[int, int], scene: int) -> Callable[[], Annotation]:
    lookup = np.zeros(max(numbers, default=0) + 1, np.int64)
    for code, number in numbers.items():
        lookup[code] = number

    def labels_of(path: Path) -> np.ndarray:
        codes = decode_classes(path, entry.size, entry.where)
        unknown = np.unique(
            codes[(codes >= lookup.size) | ((codes > 0) & (lookup[np.minimum(codes, lookup.size - 1)] == 0))]
        )
        if unknown.size:
            raise ConvertError(
                f"{path}: class code {int(unknown[0])} is not named by any ADE20K .json (name_ndx)"
            )
        return lookup[codes]

    def load() -> Annotation:
        picture = load_picture(entry.picture, entry.size, entry.where)
        seg = entry.base.with_name(f"{entry.base.name}_seg.png")
        layers: list[tuple[str | None, np.ndarray]] = [("object", labels_of(seg))]
        layers += [("part", labels_of(path)) for path in entry.parts]
        return Annotation(picture, layers, [("scene", scene)])

    return load
