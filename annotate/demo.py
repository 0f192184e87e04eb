"""Drawn demo units: each "unit" fires on one simple visual concept, so the whole crowd flow can be tried
without downloading anything. Images follow NetDissect's convention: the activated region at full
brightness, the rest darkened to 20%.
"""
from __future__ import annotations

import json
import os
import random
import secrets
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from PIL import Image, ImageDraw

SIZE = 96
IMAGES_PER_UNIT = 12
LAYER = "conv4"
OUTSIDE_BRIGHTNESS = 0.2
PASSWORD_FILE = "demo-password"

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
        draw.rectangle((x, y, x + rng.randrange(8, 24), y + rng.randrange(8, 24)),
                       fill=tuple(rng.randrange(60, 200) for _ in range(3)))
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
        meta = {"label": label, "category": category, "iou": round(rng.uniform(0.05, 0.3), 3),
                "interpretable": True, "activations": [activation for _, activation in drawn]}
        (folder / "unit.json").write_text(json.dumps(meta))


def demo_password() -> str:
    """DEMO_PASSWORD, else the one an earlier run stored under var/, else a new one (then stored)."""
    if os.environ.get("DEMO_PASSWORD"):
        return os.environ["DEMO_PASSWORD"]
    path = Path(settings.BASE_DIR) / "var" / PASSWORD_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


# --- the real demo pipeline: synthetic probe set, toy network, dissection ---------------------------------

PROBE_IMAGES = 160
PROBE_SIZE = 64
TOY_EPOCHS = 40
RUN_LAYERS = ("conv3", "conv4")
RUN_TOPK = 12
RUN_SHARD_SIZE = 40
BATCH_UNITS = 8
# Broden-style categories of the synthetic probe set -> the six human categories of the worker form.
HUMAN_CATEGORY = {"color": "color", "object": "object", "part": "part", "material": "texture",
                  "scene": "scene", "texture": "texture"}


def cache_dir() -> Path:
    """Where the demo keeps its probe set and trained toy network between `make run`s."""
    return Path(os.environ.get("DEMO_CACHE_DIR") or Path(settings.BASE_DIR) / "var" / "demo")


def probe_set_folder(cache: Path) -> Path:
    """The synthetic probe set under `cache`, built (atomically) on first use."""
    import shutil
    import tempfile

    from dissection.synth import make_probe_set

    folder = cache / "probe-set"
    if (folder / "index.csv").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".probe-set-", dir=cache))
    try:
        make_probe_set(partial, images=PROBE_IMAGES, size=PROBE_SIZE, seed=0)
        shutil.rmtree(folder, ignore_errors=True)
        partial.replace(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder


def toy_weights(cache: Path, probe_set: Path, *, progress: bool) -> Path:
    """The toy network trained on the probe set (CPU, about half a minute), cached under `cache`."""
    from dissection.train import train_toy

    path = cache / "toy.pt"
    return path if path.is_file() else train_toy(probe_set, path, seed=0, epochs=TOY_EPOCHS, progress=progress)
