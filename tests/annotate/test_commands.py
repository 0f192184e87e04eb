"""Management commands: import_units, export_batch, expire_assignments, demo, serve_demo."""
from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from PIL import Image

from annotate import services
from annotate.models import Assignment, Batch, DissectionRun, Unit, UnitImage


def _unit_folder(root: Path, name: str, images: int = 3, meta: dict | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for rank in range(images):
        Image.new("RGB", (6, 6), (rank * 40, 0, 0)).save(folder / f"{rank:02d}.png")
    if meta is not None:
        (folder / "unit.json").write_text(json.dumps(meta))
    return folder


def test_import_units_reads_folders_and_metadata(db, tmp_path: Path) -> None:
    _unit_folder(tmp_path, "layer4.1_conv_7", meta={"label": "dog", "category": "object", "iou": 0.12,
                                                     "interpretable": True, "activations": [3.0, 2.0, 1.0]})
    _unit_folder(tmp_path, "conv5_0", images=2)
    out = io.StringIO()
    call_command("import_units", "imported", str(tmp_path), stdout=out)
    assert "Imported 2 units (5 images)" in out.getvalue()
    run = DissectionRun.objects.get(name="imported")
    assert run.network is None and run.layers == ["conv5", "layer4.1_conv"]
    unit = Unit.objects.get(layer="layer4.1_conv", index=7)
    assert (unit.label, unit.category, unit.iou, unit.interpretable) == ("dog", "object", 0.12, True)
    assert list(unit.images.values_list("rank", "max_activation", "source_image")) == [
        (0, 3.0, "00.png"), (1, 2.0, "01.png"), (2, 1.0, "02.png")]
    assert unit.images.first().image.read()[:4] == b"\x89PNG"


@pytest.mark.parametrize("setup,message", [
    (lambda root: _unit_folder(root, "nounderscore"), "nounderscore: a unit folder is named"),
    (lambda root: (_unit_folder(root, "conv5_1"), (root / "conv5_1" / "notes.txt").write_text("x")),
     "notes.txt: not an image"),
    (lambda root: (_unit_folder(root, "conv5_1"), (root / "conv5_1" / "99.png").write_bytes(b"not a png")),
     "99.png: unreadable image"),
    (lambda root: _unit_folder(root, "conv5_2", images=0), "conv5_2: no images"),
    (lambda root: _unit_folder(root, "conv5_3", meta={"activations": [1]}), "'activations' must list"),
    (lambda root: (_unit_folder(root, "conv5_4"), (root / "conv5_4" / "unit.json").write_text("{oops")),
     "unit.json: not valid JSON"),
])
def test_import_units_names_the_bad_folder_or_file_and_writes_nothing(db, tmp_path, settings, setup,
                                                                      message) -> None:
    _unit_folder(tmp_path, "conv5_0")  # a good folder next to the bad one
    setup(tmp_path)
    with pytest.raises(CommandError, match=message):
        call_command("import_units", "run", str(tmp_path))
    assert not DissectionRun.objects.exists() and not UnitImage.objects.exists()
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.png"))


def test_import_units_refuses_a_unit_already_in_the_run(db, tmp_path: Path) -> None:
    _unit_folder(tmp_path / "a", "conv5_0")
    call_command("import_units", "run", str(tmp_path / "a"), stdout=io.StringIO())
    with pytest.raises(CommandError, match="conv5_0: unit conv5#0 is already in run 'run'"):
        call_command("import_units", "run", str(tmp_path / "a"))
    with pytest.raises(CommandError, match="not a folder"):
        call_command("import_units", "run", str(tmp_path / "missing"))


def test_export_batch_to_file_and_stdout(batch: Batch, tmp_path: Path) -> None:
    worker = services.worker_get_or_create(provider="local", external_id="alice")
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    services.annotation_submit(assignment=assignment, words="red", category="color", rejected_ranks=[1])
    out = tmp_path / "out.json"
    call_command("export_batch", str(batch.public_id), "--format", "json", "--out", str(out),
                 stderr=io.StringIO())
    rows = json.loads(out.read_text())
    assert [(r["worker"], r["unit_index"], r["words"], r["rejected_ranks"]) for r in rows] == [
        ("alice", 0, "red", [1])]
    stdout = io.StringIO()
    call_command("export_batch", batch.title, "--format", "csv", stdout=stdout)
    lines = stdout.getvalue().splitlines()
    assert lines[0].startswith("batch,task,run,unit_id,layer,unit_index,") and len(lines) == 2 and ",alice," in lines[1]
    with pytest.raises(CommandError, match="no batch 'nope'"):
        call_command("export_batch", "nope")


def test_expire_assignments_command(batch: Batch) -> None:
    worker = services.worker_get_or_create(provider="local", external_id="alice")
    services.assignment_accept(task=batch.tasks.first(), worker=worker, now=timezone.now() - timedelta(days=1))
    out = io.StringIO()
    call_command("expire_assignments", stdout=out)
    assert "Expired 1 assignment" in out.getvalue()
    assert Assignment.objects.get().slot is None
