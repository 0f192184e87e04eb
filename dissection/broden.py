"""Reading a probe set in the Broden on-disk format (the format Broden and NetDissect use).

- `index.csv` (`image,split,ih,iw,sh,sw,<category>…`, read by column name): `image` is a path under `images/`;
  each category cell is a `;`-separated list in which an all-digits item is an image-level label number and
  any other item a PNG label layer under `images/` (several PNGs = several layers); empty = no data.
- A PNG label layer is exactly sh x sw; a pixel's label number is R + 256 * G (0 = unlabelled).
- `label.csv` (`number,name,category,…`), `category.csv` (its row order is the category order everywhere) and
  `c_<category>.csv` (`code,number,name,frequency,coverage`). A label's primary category is the one whose
  c_<category>.csv gives it the largest coverage, ties to the later category; a label listed in no c_ file
  falls back to the counts in its label.csv `category` field (`material(36);object(3)`).

All images of one probe set must share one image size and one mask size (Broden: 224 and 112), because a
batch is one tensor. Every problem raises `ProbeSetError` naming the file and row.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dissection.errors import ProbeSetError

_SIZE_FIELDS = ("ih", "iw", "sh", "sw")


@dataclass(frozen=True)
class ProbeImage:
    """One row of index.csv: `row` is its 0-based position (the image index everywhere in dissection)."""

    row: int
    image: str
    layers: tuple[str, ...]
    scalars: tuple[int, ...]

    @property
    def where(self) -> str:
        return f"index.csv row {self.row + 2}"


@dataclass(frozen=True)
class ProbeSet:
    """A parsed probe set; label arrays are indexed by label number (entry 0 = unlabelled)."""

    root: Path
    images: tuple[ProbeImage, ...]
    categories: tuple[str, ...]
    label_names: tuple[str, ...]
    label_category: np.ndarray  # primary category index per label number, -1 for unused numbers
    image_size: tuple[int, int]
    mask_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_labels(self) -> int:
        """One more than the largest label number (arrays over labels have this length)."""
        return len(self.label_names)

    def path(self, name: str) -> Path:
        return self.root / "images" / name

    def load_image(self, index: int) -> np.ndarray:
        """The image as H x W x 3 uint8 RGB, checked against ih x iw."""
        record = self.images[index]
        path = self.path(record.image)
        try:
            with Image.open(path) as image:
                # The header's size is checked before decoding: a small file may claim a huge image.
                width, height = image.size
                if (height, width) != self.image_size:
                    raise ProbeSetError(
                        f"{path} ({record.where}): image is {height}x{width}, "
                        f"index.csv says {self.image_size[0]}x{self.image_size[1]}"
                    )
                array = np.asarray(image.convert("RGB"))
        except ProbeSetError:
            raise
        except FileNotFoundError:
            raise ProbeSetError(f"{path} ({record.where}): image file is missing") from None
        except Exception as error:  # Pillow raises many types for a corrupt file
            raise ProbeSetError(f"{path} ({record.where}): cannot decode image ({error})") from None
        return array

    def load_layer(self, index: int, name: str) -> np.ndarray:
        """One PNG label layer as sh x sw int32 label numbers, every number checked against label.csv."""
        record = self.images[index]
        path = self.path(name)
        try:
            with Image.open(path) as image:
                if image.mode not in {"RGB", "RGBA", "P"}:
                    raise ProbeSetError(f"{path} ({record.where}): label PNG has mode {image.mode}, not RGB")
                width, height = image.size
                if (height, width) != self.mask_size:
                    raise ProbeSetError(
                        f"{path} ({record.where}): label PNG is {height}x{width}, "
                        f"index.csv says sh x sw = {self.mask_size[0]}x{self.mask_size[1]}"
                    )
                rgb = np.asarray(image.convert("RGB"))
        except ProbeSetError:
            raise
        except FileNotFoundError:
            raise ProbeSetError(f"{path} ({record.where}): label PNG is missing") from None
        except Exception as error:  # Pillow raises many types for a corrupt file
            raise ProbeSetError(f"{path} ({record.where}): cannot decode label PNG ({error})") from None
        labels = rgb[..., 0].astype(np.int32) + 256 * rgb[..., 1].astype(np.int32)
        present = _present(labels)
        known = self.label_category[np.minimum(present, self.num_labels - 1)] >= 0
        unknown = present[(present >= self.num_labels) | ~known]
        unknown = unknown[unknown > 0]
        if unknown.size:
            raise ProbeSetError(
                f"{path} ({record.where}): label number {int(unknown[0])} is not in label.csv"
            )
        return labels

    def load_labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(numbers, onehot): the label numbers present in image `index` (ascending, int64) and a
        len(numbers) x (sh*sw) uint8 matrix, 1 where the pixel carries the label in any layer. An image-level
        label's row is all ones (it covers the whole mask); a label repeated across layers counts once."""
        record = self.images[index]
        pixels = self.mask_size[0] * self.mask_size[1]
        layers = [self.load_layer(index, name).reshape(-1) for name in record.layers]
        scalars = np.asarray(record.scalars, np.int32)
        numbers = _present(np.concatenate([*layers, scalars, np.zeros(1, np.int32)]))
        numbers = numbers[numbers > 0].astype(np.int64)
        onehot = np.zeros((numbers.size, pixels), np.uint8)
        position = np.arange(pixels)
        for layer in layers:
            labelled = layer > 0
            onehot[np.searchsorted(numbers, layer[labelled]), position[labelled]] = 1
        if record.scalars:
            onehot[np.searchsorted(numbers, np.asarray(record.scalars))] = 1
        return numbers, onehot


def _present(values: np.ndarray) -> np.ndarray:
    """np.unique of non-negative label numbers (< 2**16 from a PNG, or scalars), by counting when small."""
    flat = values.reshape(-1)
    if flat.size and flat.min() >= 0 and flat.max() < 1 << 17:
        return np.flatnonzero(np.bincount(flat)).astype(flat.dtype)
    return np.unique(flat)


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ProbeSetError(f"{path} is missing; not a Broden-format probe set")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        missing = [name for name in required if name not in fields]
        if missing:
            raise ProbeSetError(f"{path}: header lacks column(s) {', '.join(missing)}")
        return list(reader)


def _inside_images(path: Path, row: int, field: str, name: str) -> str:
    """`name` as index.csv gives it, refused unless it is a plain relative path under images/: a row must
    not make the reader open (and render into tiles) a file outside the probe set."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise ProbeSetError(f"{path} row {row}: {field} {name!r} is not a file name inside images/")
    return name


def _int(path: Path, row: int, field: str, value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise ProbeSetError(f"{path} row {row}: field {field!r} is {value!r}, not an integer") from None


def _float(path: Path, row: int, field: str, value: str | None) -> float:
    try:
        return float(value or "")
    except ValueError:
        raise ProbeSetError(f"{path} row {row}: field {field!r} is {value!r}, not a number") from None


def load_probe_set(root: str | Path) -> ProbeSet:
    """Parse and validate index.csv, label.csv, category.csv and the c_<category>.csv files under `root`.

    Image and label PNGs are checked when they are read (`ProbeSet.load_image`, `ProbeSet.load_labels`).
    """
    root = Path(root)
    if not root.is_dir():
        raise ProbeSetError(f"probe set folder {root} does not exist")
    label_path = root / "label.csv"
    label_rows = _read_csv(label_path, ("number", "name"))
    names: dict[int, str] = {}
    field_counts: dict[int, dict[str, float]] = {}
    for row_number, row in enumerate(label_rows, start=2):
        number = _int(label_path, row_number, "number", row["number"])
        if number < 1 or number in names:
            raise ProbeSetError(f"{label_path} row {row_number}: label number {number} is < 1 or repeated")
        names[number] = row["name"]
        matches = re.finditer(r"([^;()]+)\((\d+)\)", row.get("category") or "")
        field_counts[number] = {m.group(1): float(m.group(2)) for m in matches}
    category_path = root / "category.csv"
    categories = tuple(row["name"] for row in _read_csv(category_path, ("name",)))
    if not categories:
        raise ProbeSetError(f"{category_path}: lists no categories")

    coverage = np.full((max(names, default=0) + 1, len(categories)), -np.inf)
    listed = np.zeros(coverage.shape[0], bool)
    for cat_index, cat in enumerate(categories):
        cat_path = root / f"c_{cat}.csv"
        if not cat_path.is_file():
            continue
        for row_number, row in enumerate(_read_csv(cat_path, ("number", "coverage")), start=2):
            number = _int(cat_path, row_number, "number", row["number"])
            if number not in names:
                raise ProbeSetError(f"{cat_path} row {row_number}: label number {number} is not in label.csv")
            coverage[number, cat_index] = _float(cat_path, row_number, "coverage", row["coverage"])
            listed[number] = True
    for number, counts in field_counts.items():
        if not listed[number]:
            for cat_index, cat in enumerate(categories):
                if cat in counts:
                    coverage[number, cat_index] = counts[cat]
    label_category = np.full(coverage.shape[0], -1, np.int64)
    for number in names:
        row = coverage[number]
        if np.isfinite(row).any():
            label_category[number] = len(categories) - 1 - int(np.argmax(row[::-1]))  # ties: later category
        else:
            raise ProbeSetError(
                f"{label_path}: label {number} ({names[number]!r}) belongs to no category of category.csv"
            )
    label_names = tuple(names.get(number, "") for number in range(coverage.shape[0]))

    index_path = root / "index.csv"
    index_rows = _read_csv(index_path, ("image", *_SIZE_FIELDS))
    if not index_rows:
        raise ProbeSetError(f"{index_path}: holds no images")
    columns = [cat for cat in categories if cat in index_rows[0]]
    images = []
    sizes: tuple[int, ...] | None = None
    for row_index, row in enumerate(index_rows):
        row_number = row_index + 2
        row_sizes = tuple(_int(index_path, row_number, field, row[field]) for field in _SIZE_FIELDS)
        if min(row_sizes) < 1:
            raise ProbeSetError(f"{index_path} row {row_number}: sizes must be positive")
        if sizes is None:
            sizes = row_sizes
        elif row_sizes != sizes:
            raise ProbeSetError(
                f"{index_path} row {row_number}: sizes ih,iw,sh,sw = {row_sizes} differ from row 2's "
                f"{sizes}; all images of a probe set must share one size"
            )
        layers: list[str] = []
        scalars: list[int] = []
        for cat in columns:
            for item in filter(None, (part.strip() for part in (row[cat] or "").split(";"))):
                if item.isdigit():
                    number = int(item)
                    if number not in names:
                        raise ProbeSetError(
                            f"{index_path} row {row_number}: column {cat!r} names label {number}, "
                            "which is not in label.csv"
                        )
                    scalars.append(number)
                else:
                    layers.append(_inside_images(index_path, row_number, cat, item))
        image = _inside_images(index_path, row_number, "image", row["image"] or "")
        images.append(ProbeImage(row_index, image, tuple(layers), tuple(sorted(set(scalars)))))
    assert sizes is not None
    image_size, mask_size = (sizes[0], sizes[1]), (sizes[2], sizes[3])
    return ProbeSet(root, tuple(images), categories, label_names, label_category, image_size, mask_size)
