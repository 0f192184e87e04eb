"""`manage.py import_units`: unit folders from elsewhere become a run's units, or a clear error and
nothing written."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from runs.models import DissectionRun, Unit, UnitImage


def _unit_folder(root: Path, name: str, images: int = 3, meta: dict | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for rank in range(images):
        Image.new("RGB", (6, 6), (rank * 40, 0, 0)).save(folder / f"{rank:02d}.png")
    if meta is not None:
        (folder / "unit.json").write_text(json.dumps(meta))
    return folder


def test_import_units_reads_folders_and_metadata(db, tmp_path: Path) -> None:
    _unit_folder(
        tmp_path,
        "layer4.1_conv_7",
        meta={
            "label": "dog",
            "category": "object",
            "iou": 0.12,
            "interpretable": True,
            "activations": [3.0, 2.0, 1.0],
        },
    )
    _unit_folder(tmp_path, "conv5_0", images=2)
    out = io.StringIO()
    call_command("import_units", "imported", str(tmp_path), stdout=out)
    assert "Imported 2 units (5 images)" in out.getvalue()
    run = DissectionRun.objects.get(name="imported")
    assert run.network is None and run.layers == ["conv5", "layer4.1_conv"]
    unit = Unit.objects.get(layer="layer4.1_conv", channel=7)
    assert (unit.label, unit.concept_category, unit.iou, unit.interpretable) == ("dog", "object", 0.12, True)
    assert list(unit.images.values_list("rank", "max_activation", "source_image")) == [
        (0, 3.0, "00.png"),
        (1, 2.0, "01.png"),
        (2, 1.0, "02.png"),
    ]
    assert unit.images.first().image.read()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda root: _unit_folder(root, "nounderscore"), "nounderscore: a unit folder is named"),
        (
            lambda root: (_unit_folder(root, "conv5_1"), (root / "conv5_1" / "notes.txt").write_text("x")),
            "notes.txt: not an image",
        ),
        (
            lambda root: (
                _unit_folder(root, "conv5_1"),
                (root / "conv5_1" / "99.png").write_bytes(b"not a png"),
            ),
            "99.png: unreadable image",
        ),
        (lambda root: _unit_folder(root, "conv5_2", images=0), "conv5_2: no images"),
        (lambda root: _unit_folder(root, "conv5_3", meta={"activations": [1]}), "'activations' must list"),
        (
            lambda root: (
                _unit_folder(root, "conv5_4"),
                (root / "conv5_4" / "unit.json").write_text("{oops"),
            ),
            "unit.json: not valid JSON",
        ),
    ],
)
def test_import_units_names_the_bad_folder_or_file_and_writes_nothing(
    db, tmp_path, settings, setup, message
) -> None:
    _unit_folder(tmp_path, "conv5_0")  # a good folder next to the bad one
    setup(tmp_path)
    with pytest.raises(CommandError, match=message):
        call_command("import_units", "run", str(tmp_path))
    assert not DissectionRun.objects.exists() and not UnitImage.objects.exists()
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.png"))


def test_import_units_refuses_a_unit_already_in_the_run(db, tmp_path: Path) -> None:
    _unit_folder(tmp_path / "a", "conv5_0")
    call_command("import_units", "run", str(tmp_path / "a"), stdout=io.StringIO())
    with pytest.raises(CommandError, match=r"conv5_0: conv5 unit 1 \(channel 0\) is already in run 'run'"):
        call_command("import_units", "run", str(tmp_path / "a"))
    with pytest.raises(CommandError, match="not a folder"):
        call_command("import_units", "run", str(tmp_path / "missing"))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims `width` x `height` pixels (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "meta,message",
    [
        ({"iou": "high"}, "unit.json: field 'iou' must be a number, not 'high'"),
        ({"interpretable": "yes"}, "unit.json: field 'interpretable' must be true or false"),
        ({"label": 7}, "unit.json: field 'label' must be a string"),
        ({"category": "animal"}, "unit.json: field 'category' is 'animal', not one of color, object"),
        ({"colour": "red"}, "unit.json: unknown field 'colour'"),
        ({"activations": [1, True, 3]}, "'activations' must list one number per image"),
    ],
)
def test_import_units_checks_unit_json_field_by_field(db, tmp_path: Path, meta: dict, message: str) -> None:
    _unit_folder(tmp_path, "conv5_0", meta=meta)
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("import_units", "run", str(tmp_path))
    assert not DissectionRun.objects.exists()


def test_a_decompression_bomb_is_refused_from_its_header(db, tmp_path: Path, settings) -> None:
    folder = _unit_folder(tmp_path, "conv5_0")
    (folder / "03.png").write_bytes(_png_claiming(6000, 6000))
    with pytest.raises(CommandError, match=r"03\.png: 6000 x 6000 pixels, more than UNIT_IMAGE_MAX_PIXELS"):
        call_command("import_units", "run", str(tmp_path))
    assert not DissectionRun.objects.exists() and not list(Path(settings.MEDIA_ROOT).rglob("*"))


def test_a_full_disk_is_a_clear_error_and_leaves_no_file_behind(
    db, tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from django.core.files.storage import FileSystemStorage

    _unit_folder(tmp_path / "units", "conv5_0", images=3)
    real_save = FileSystemStorage._save
    writes = []

    def fill_up(self: FileSystemStorage, name: str, content: object) -> str:
        if len(writes) == 2:  # the third image finds the disk full half way through
            path = Path(self.path(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(name)
        return real_save(self, name, content)

    monkeypatch.setattr(FileSystemStorage, "_save", fill_up)
    with pytest.raises(CommandError, match="writing the images failed \\(No space left on device\\)"):
        call_command("import_units", "run", str(tmp_path / "units"))
    assert not DissectionRun.objects.exists() and not UnitImage.objects.exists()
    assert not [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
