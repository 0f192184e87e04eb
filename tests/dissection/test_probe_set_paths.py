"""index.csv cannot make the reader open files outside the probe set, and an image's size is read from its
header before it is decoded (a small file may claim a huge image)."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import pytest

from dissection.broden import load_probe_set
from dissection.errors import ProbeSetError
from dissection.synth import make_probe_set


@pytest.fixture
def small_set(tmp_path: Path) -> Path:
    return make_probe_set(tmp_path / "set", images=4, size=32, seed=1)


def _rewrite_index(root: Path, row: int, field: str, value: str) -> None:
    with (root / "index.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    rows[row][field] = value
    with (root / "index.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


OUTSIDE = ["../../secret.png", "/etc/passwd", "synth/../../x.png", "synth//a.png"]


@pytest.mark.parametrize(
    "field,name", [("image", name) for name in [*OUTSIDE, ""]] + [("color", name) for name in OUTSIDE]
)
def test_an_index_row_pointing_outside_the_probe_set_is_refused(
    small_set: Path, tmp_path: Path, field: str, name: str
) -> None:
    (tmp_path / "secret.png").write_bytes(b"outside")
    _rewrite_index(small_set, 2, field, name)
    with pytest.raises(
        ProbeSetError, match=r"index\.csv row 4: " + field + " .* is not a file name inside images/"
    ):
        load_probe_set(small_set)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_an_image_claiming_a_huge_size_is_refused_from_its_header(small_set: Path) -> None:
    probe = load_probe_set(small_set)
    path = probe.path(probe.images[1].image)
    path.write_bytes(_png_header_only(12000, 12000))
    with pytest.raises(
        ProbeSetError, match=r"index\.csv row 3\): image is 12000x12000, index\.csv says 32x32"
    ):
        probe.load_image(1)
