"""Management commands: export_batch, expire_assignments, demo, serve_demo."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from annotate import services
from annotate.models import Assignment, Batch


def test_export_batch_to_file_and_stdout(batch: Batch, tmp_path: Path) -> None:
    worker = services.crowd_worker_get_or_create(provider="local", external_id="alice")
    assignment = services.assignment_accept(task=batch.tasks.first(), worker=worker)
    services.annotation_submit(assignment=assignment, words="red", category="color", rejected_ranks=[1])
    out = tmp_path / "out.json"
    call_command(
        "export_batch", str(batch.public_id), "--format", "json", "--out", str(out), stderr=io.StringIO()
    )
    rows = json.loads(out.read_text())
    assert [(r["worker"], r["unit"], r["channel"], r["words"], r["images_not_fitting"]) for r in rows] == [
        ("alice", 1, 0, "red", [2])
    ]
    stdout = io.StringIO()
    call_command("export_batch", batch.title, "--format", "csv", stdout=stdout)
    lines = stdout.getvalue().splitlines()
    assert (
        lines[0].startswith("batch,batch_title,task,task_number,task_kind,run,layer,unit,channel,")
        and len(lines) == 2
        and ",alice," in lines[1]
    )
    with pytest.raises(CommandError, match="no batch 'nope'"):
        call_command("export_batch", "nope")


def test_expire_assignments_command(batch: Batch) -> None:
    worker = services.crowd_worker_get_or_create(provider="local", external_id="alice")
    services.assignment_accept(
        task=batch.tasks.first(), worker=worker, now=timezone.now() - timedelta(days=1)
    )
    out = io.StringIO()
    call_command("expire_assignments", stdout=out)
    assert "Expired 1 assignment" in out.getvalue()
    assert Assignment.objects.get().slot is None
