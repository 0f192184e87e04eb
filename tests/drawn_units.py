"""Drawn units for tests: each "unit" fires on one simple visual concept, written in the folder layout
`manage.py import_units` reads. Images follow NetDissect's convention: the activated region at full
brightness, the rest darkened to 20%.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 96
IMAGES_PER_UNIT = 12
LAYER = "conv4"
OUTSIDE_BRIGHTNESS = 0.2

Box = tuple[int, int, int, int]
Painter = Callable[[ImageDraw.ImageDraw, Box, random.Random], None]


def highlight(image: Image.Image, mask: Image.Image, outside: float = OUTSIDE_BRIGHTNESS) -> Image.Image:
    """`image` where `mask` (mode L, 255 = activated) is set, and `outside` of its brightness elsewhere."""
    dark = image.point(lambda v: int(v * outside))
    return Image.composite(image, dark, mask)


def _circle(draw: ImageDraw.ImageDraw, box: Box, rng: random.Random) -> None:
    draw.ellipse(box, fill=(220, 30 + rng.randrange(30), 30))


def _stripes(draw: ImageDraw.ImageDraw, box: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    step = 6 + rng.randrange(4)
    for x in range(x0, x1, step * 2):
        draw.rectangle((x, y0, min(x + step, x1), y1), fill=(40, 60, 200))


def _triangle(draw: ImageDraw.ImageDraw, box: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=(30, 180 + rng.randrange(50), 60))


def _checker(draw: ImageDraw.ImageDraw, box: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    cell = 5 + rng.randrange(3)
    for i, x in enumerate(range(x0, x1, cell)):
        for j, y in enumerate(range(y0, y1, cell)):
            if (i + j) % 2 == 0:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(20, 20, 20))
            else:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(240, 240, 240))


def _ring(draw: ImageDraw.ImageDraw, box: Box, rng: random.Random) -> None:
    draw.ellipse(box, outline=(240, 200, 20), width=5 + rng.randrange(3))


def _cross(draw: ImageDraw.ImageDraw, box: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    colour = (150, 40, 170 + rng.randrange(60))
    draw.line((x0, y0, x1, y1), fill=colour, width=6)
    draw.line((x0, y1, x1, y0), fill=colour, width=6)


# unit index -> (painter, automatic label, Broden-style category of that label)
UNITS: dict[int, tuple[Painter, str, str]] = {
    0: (_circle, "red", "color"),
    1: (_stripes, "striped", "texture"),
    2: (_triangle, "green", "color"),
    3: (_checker, "chequered", "texture"),
    4: (_ring, "yellow", "color"),
    5: (_cross, "purple", "color"),
}
# Known answers of the two gold units: unit index -> (category code, accepted words).
GOLD: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("color", ("red", "circle", "red circle", "disc", "dot")),
    1: ("texture", ("stripes", "striped", "lines", "blue stripes")),
}


def draw_unit_image(painter: Painter, rng: random.Random) -> tuple[Image.Image, float]:
    """One top-activating image: a noisy background, the concept in a random box, that box highlighted."""
    base = tuple(rng.randrange(60, 200) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), base)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(SIZE), rng.randrange(SIZE)
        draw.rectangle(
            (x, y, x + rng.randrange(8, 24), y + rng.randrange(8, 24)),
            fill=tuple(rng.randrange(60, 200) for _ in range(3)),
        )
    side = rng.randrange(36, 60)
    x0, y0 = rng.randrange(4, SIZE - side - 4), rng.randrange(4, SIZE - side - 4)
    box = (x0, y0, x0 + side, y0 + side)
    painter(draw, box, rng)
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((x0 - 4, y0 - 4, box[2] + 4, box[3] + 4), fill=255)
    return highlight(image, mask), round(rng.uniform(2.0, 9.0), 3)


def draw_unit_folders(directory: Path, seed: int = 0) -> None:
    """Write one `<layer>_<index>/` folder per demo unit in the layout `manage.py import_units` reads."""
    rng = random.Random(seed)
    for index, (painter, label, category) in UNITS.items():
        folder = directory / f"{LAYER}_{index}"
        folder.mkdir(parents=True)
        drawn = [draw_unit_image(painter, rng) for _ in range(IMAGES_PER_UNIT)]
        drawn.sort(key=lambda pair: -pair[1])
        for rank, (image, _) in enumerate(drawn):
            image.save(folder / f"{rank:03d}.png")
        meta = {
            "label": label,
            "category": category,
            "iou": round(rng.uniform(0.05, 0.3), 3),
            "interpretable": True,
            "activations": [activation for _, activation in drawn],
        }
        (folder / "unit.json").write_text(json.dumps(meta))
