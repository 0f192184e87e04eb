"""A deterministic synthetic probe set in the Broden on-disk format, for tests, the demo and the benchmark.

Every image shows one main object (house, tree, car, ball or flag) at a random position and size, drawn over a
background that may carry a texture (image-level label) and a floor of some material whose scene is an
image-level label. All six Broden categories are present: color (pixel), object (pixel), part (pixel, up to
two part layers), material (pixel), scene (number) and texture (number); balls have no parts, plain
backgrounds no texture and floorless images neither material nor scene, so some images lack some categories.

Label maps are evaluated at the mask grid's pixel centres from the same continuous geometry as the image, so
masks (size // 2) align with the picture. `boxes.csv` holds each object's bounding box in image pixels
(inclusive) and its class index into `classes.txt`, for training the toy model and scoring CAM localization.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORY_ORDER = ("color", "object", "part", "material", "scene", "texture")

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
OBJECTS = ("house", "tree", "car", "ball", "flag")
PARTS = ("wall", "roof", "door", "crown", "trunk", "body", "wheel", "window", "pole", "cloth")
MATERIALS = ("grass", "water", "sand", "wood")
SCENES = ("meadow", "lake", "beach", "room")  # one scene per floor material, in MATERIALS order
TEXTURES = ("striped", "dotted", "checkered", "zigzag")

_BACKGROUND_COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "white")
_OBJECT_COLORS = ("red", "orange", "yellow", "green", "blue", "purple")


@dataclass(frozen=True)
class _Label:
    number: int
    name: str
    category: str


def _labels() -> list[_Label]:
    names: list[tuple[str, str]] = (
        [(f"{c}-c", "color") for c in COLORS]
        + [(o, "object") for o in OBJECTS]
        + [(p, "part") for p in PARTS]
        + [(m, "material") for m in MATERIALS]
        + [(f"{s}-s", "scene") for s in SCENES]
        + [(t, "texture") for t in TEXTURES]
    )
    return [_Label(i + 1, name, cat) for i, (name, cat) in enumerate(names)]


LABELS = _labels()
NUMBER = {label.name: label.number for label in LABELS}


def _object_parts(
    kind: str, X: np.ndarray, Y: np.ndarray, cx: float, cy: float, s: float
) -> list[tuple[str, int, np.ndarray]]:
    """(part name, part layer 1 or 2, mask) in drawing order; later parts paint over earlier ones."""
    ax, ay = np.abs(X - cx), Y - cy
    if kind == "house":
        wall = (ax < 0.8 * s) & (ay > -0.1 * s) & (ay < s)
        roof = (ay <= -0.1 * s) & (ay > -s) & (ax < 0.9 * (ay + s) / 0.9)
        door = (ax < 0.2 * s) & (ay > 0.4 * s) & (ay < s)
        return [("wall", 1, wall), ("roof", 1, roof), ("door", 2, door)]
    if kind == "tree":
        trunk = (ax < 0.15 * s) & (ay > 0.1 * s) & (ay < s)
        crown = (X - cx) ** 2 + (Y - (cy - 0.3 * s)) ** 2 < (0.65 * s) ** 2
        return [("trunk", 1, trunk & ~crown), ("crown", 1, crown)]
    if kind == "car":
        body = (ax < s) & (ay > -0.45 * s) & (ay < 0.35 * s)
        wheel = ((X - (cx - 0.55 * s)) ** 2 + (Y - (cy + 0.45 * s)) ** 2 < (0.3 * s) ** 2) | (
            (X - (cx + 0.55 * s)) ** 2 + (Y - (cy + 0.45 * s)) ** 2 < (0.3 * s) ** 2
        )
        window = (np.abs(X - (cx - 0.25 * s)) < 0.35 * s) & (ay > -0.35 * s) & (ay < -0.05 * s)
        return [("body", 1, body & ~wheel), ("wheel", 1, wheel), ("window", 2, window)]
    if kind == "ball":
        return [("", 1, (X - cx) ** 2 + (Y - cy) ** 2 < s**2)]
    pole = (np.abs(X - (cx - 0.75 * s)) < 0.08 * s) & (ay > -s) & (ay < s)
    cloth = (cx - 0.67 * s < X) & (cx + s > X) & (ay > -s) & (ay < -0.1 * s)
    return [("pole", 1, pole), ("cloth", 1, cloth)]


def _part_color(part: str, primary: str) -> str:
    if part in {"roof", "trunk", "wheel", "pole"}:
        return "black"
    if part in {"door", "window"}:
        return "white"
    return primary


def _texture(kind: str, X: np.ndarray, Y: np.ndarray, period: float, phase: float) -> np.ndarray:
    """True where the background takes its darker tone."""
    u, v = (X + phase) / period, (Y + phase) / period
    if kind == "striped":
        return np.mod(u + v, 1.0) < 0.5
    if kind == "dotted":
        return (np.mod(u, 1.0) - 0.5) ** 2 + (np.mod(v, 1.0) - 0.5) ** 2 < 0.08
    if kind == "checkered":
        return (np.floor(u) + np.floor(v)) % 2 == 0
    return np.abs(np.mod(v + 0.5 * np.abs(np.mod(u, 1.0) - 0.5), 1.0) - 0.5) < 0.15


def _material(kind: str, X: np.ndarray, Y: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """RGB floats in [0, 255] of a floor material on the grid (X, Y); `noise` is uniform [0, 1) per pixel."""
    if kind == "grass":
        blade = 0.5 + 0.5 * np.sin(X * 140.0 + 3.0 * np.sin(Y * 40.0))
        base, shade = np.array([40, 120, 30]), np.array([110, 200, 70])
    elif kind == "water":
        blade = 0.5 + 0.5 * np.sin(Y * 90.0 + 2.0 * np.sin(X * 25.0))
        base, shade = np.array([20, 60, 140]), np.array([120, 190, 240])
    elif kind == "sand":
        blade = noise
        base, shade = np.array([190, 160, 100]), np.array([240, 215, 160])
    else:
        blade = 0.5 + 0.5 * np.sin(Y * 60.0 + 6.0 * np.sin(X * 6.0))
        base, shade = np.array([100, 55, 20]), np.array([170, 110, 60])
    mix = np.clip(0.8 * blade + 0.2 * noise, 0.0, 1.0)[..., None]
    return base * (1 - mix) + shade * mix


@dataclass(frozen=True)
class _Scene:
    background: str
    texture: str | None
    period: float
    phase: float
    material: str | None
    floor: float
    kind: str
    primary: str
    cx: float
    cy: float
    s: float


def _draw_scene(rng: np.random.Generator, cls: int) -> _Scene:
    background = _BACKGROUND_COLORS[rng.integers(len(_BACKGROUND_COLORS))]
    texture = TEXTURES[rng.integers(len(TEXTURES))] if rng.random() < 0.75 else None
    material = MATERIALS[rng.integers(len(MATERIALS))] if rng.random() < 0.75 else None
    floor = float(rng.uniform(0.62, 0.85)) if material else 1.0
    primary = str(rng.choice([c for c in _OBJECT_COLORS if c != background]))
    s = float(rng.uniform(0.12, 0.3))
    cx = float(rng.uniform(s, 1.0 - s))
    cy = float(rng.uniform(s, 1.0 - s))
    return _Scene(
        background,
        texture,
        float(rng.uniform(0.07, 0.14)),
        float(rng.uniform(0, 1)),
        material,
        floor,
        OBJECTS[cls],
        primary,
        cx,
        cy,
        s,
    )


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(n) + 0.5) / n
    return np.meshgrid(centres, centres, indexing="xy")


def _render(scene: _Scene, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """The picture (if `rng` is given) and every label layer on an n x n grid."""
    X, Y = _grid(n)
    color = np.zeros((n, n), np.int32)
    obj = np.zeros((n, n), np.int32)
    part1 = np.zeros((n, n), np.int32)
    part2 = np.zeros((n, n), np.int32)
    material = np.zeros((n, n), np.int32)
    floor = scene.floor <= Y
    sky = ~floor
    color[sky] = NUMBER[f"{scene.background}-c"]
    out: dict[str, np.ndarray] = {}
    if rng is not None:
        rgb = np.empty((n, n, 3))
        bg = np.array(COLORS[scene.background], float)
        rgb[:] = bg
        if scene.texture:
            dark = _texture(scene.texture, X, Y, scene.period, scene.phase)
            rgb[dark] = bg * 0.55
        noise = rng.random((n, n))
        if scene.material:
            rgb[floor] = _material(scene.material, X, Y, noise)[floor]
    if scene.material:
        material[floor] = NUMBER[scene.material]
    for name, layer, mask in _object_parts(scene.kind, X, Y, scene.cx, scene.cy, scene.s):
        cname = _part_color(name, scene.primary)
        obj[mask] = NUMBER[scene.kind]
        color[mask] = NUMBER[f"{cname}-c"]
        material[mask] = 0
        if name:
            (part1 if layer == 1 else part2)[mask] = NUMBER[name]
        if layer == 1:
            part2[mask] = 0
        if rng is not None:
            rgb[mask] = COLORS[cname]
    if rng is not None:
        rgb += rng.normal(0.0, 6.0, rgb.shape)
        out["rgb"] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    out.update(color=color, object=obj, part_1=part1, part_2=part2, material=material)
    return out


def _encode(layer: np.ndarray) -> Image.Image:
    """Broden's label PNG: label number = R + 256 * G."""
    rgb = np.zeros((*layer.shape, 3), np.uint8)
    rgb[..., 0] = layer % 256
    rgb[..., 1] = layer // 256
    return Image.fromarray(rgb, "RGB")


def make_probe_set(out: Path, *, images: int = 200, size: int = 96, seed: int = 0) -> Path:
    """Write a Broden-format probe set of `images` pictures of `size` px (masks size // 2) under `out`.

    Deterministic for a given (images, size, seed). Classes cycle through OBJECTS so every class is equally
    represented. Returns `out`.
    """
    if images < 1 or size < 8:
        raise ValueError("a probe set needs at least one image of at least 8 px")
    out = Path(out)
    (out / "images" / "synth").mkdir(parents=True, exist_ok=True)
    mask_size = size // 2
    index_rows: list[dict[str, str]] = []
    box_rows: list[list[object]] = []
    freq: dict[int, dict[str, int]] = {label.number: {} for label in LABELS}
    coverage: dict[int, float] = {label.number: 0.0 for label in LABELS}
    category_images: dict[str, int] = dict.fromkeys(CATEGORY_ORDER, 0)
    order = np.random.default_rng(seed).permutation(images)
    for i in range(images):
        rng = np.random.default_rng([seed, i])
        cls = int(order[i] % len(OBJECTS))
        scene = _draw_scene(rng, cls)
        picture = _render(scene, size, rng)
        masks = _render(scene, mask_size, None)
        stem = f"synth/{i:06d}"
        Image.fromarray(picture["rgb"], "RGB").save(out / "images" / f"{stem}.png")
        ys, xs = np.nonzero(picture["object"])
        box_rows.append([f"{stem}.png", cls, OBJECTS[cls], xs.min(), ys.min(), xs.max(), ys.max()])
        row = {
            "image": f"{stem}.png",
            "split": "train",
            "ih": str(size),
            "iw": str(size),
            "sh": str(mask_size),
            "sw": str(mask_size),
        }
        cells: dict[str, list[str]] = {cat: [] for cat in CATEGORY_ORDER}
        for layer_name, cat in (
            ("color", "color"),
            ("object", "object"),
            ("part_1", "part"),
            ("part_2", "part"),
            ("material", "material"),
        ):
            layer = masks[layer_name]
            if not layer.any():
                continue
            file_name = f"{stem}_{layer_name}.png"
            _encode(layer).save(out / "images" / file_name)
            cells[cat].append(file_name)
            numbers, counts = np.unique(layer[layer > 0], return_counts=True)
            for number, count in zip(numbers.tolist(), counts.tolist(), strict=True):
                freq[number][cat] = freq[number].get(cat, 0) + 1
                coverage[number] += count / layer.size
        if scene.material:
            cells["scene"].append(str(NUMBER[f"{SCENES[MATERIALS.index(scene.material)]}-s"]))
        if scene.texture:
            cells["texture"].append(str(NUMBER[scene.texture]))
        for cat in ("scene", "texture"):
            for number in cells[cat]:
                freq[int(number)][cat] = freq[int(number)].get(cat, 0) + 1
                coverage[int(number)] += 1.0
        for cat in CATEGORY_ORDER:
            category_images[cat] += bool(cells[cat])
            row[cat] = ";".join(cells[cat])
        index_rows.append(row)
    index_header = ["image", "split", "ih", "iw", "sh", "sw", *CATEGORY_ORDER]
    _write_csv(out / "index.csv", index_header, [[r[k] for k in index_header] for r in index_rows])
    _write_csv(
        out / "label.csv",
        ["number", "name", "category", "frequency", "coverage", "syns"],
        [
            [
                label.number,
                label.name,
                _category_field(freq[label.number]) or label.category,
                sum(freq[label.number].values()),
                f"{coverage[label.number]:.6f}",
                "",
            ]
            for label in LABELS
        ],
    )
    category_rows = []
    for cat in CATEGORY_ORDER:
        members = [label for label in LABELS if label.category == cat]
        category_rows.append([cat, members[0].number, members[-1].number, len(members), category_images[cat]])
        _write_csv(
            out / f"c_{cat}.csv",
            ["code", "number", "name", "frequency", "coverage"],
            [
                [
                    code,
                    label.number,
                    label.name,
                    freq[label.number].get(cat, 0),
                    f"{coverage[label.number]:.6f}",
                ]
                for code, label in enumerate(members, start=1)
            ],
        )
    _write_csv(out / "category.csv", ["name", "first", "last", "count", "frequency"], category_rows)
    _write_csv(out / "boxes.csv", ["image", "class", "name", "x1", "y1", "x2", "y2"], box_rows)
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in OBJECTS))
    return out


def _category_field(counts: dict[str, int]) -> str:
    """label.csv's `category` cell, e.g. `object(12);part(3)`: images per category the label appears in."""
    return ";".join(f"{cat}({n})" for cat, n in counts.items())


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
