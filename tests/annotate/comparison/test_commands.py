"""`manage.py compare` and `manage.py simulate_crowd`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate import services
from annotate.models import Annotation, Batch
from annotate.services.verification import verification_batch_create
from annotate.simulation import crowd_simulate

REQUIRED = (
    "units",
    "fleiss_kappa",
    "krippendorff_alpha",
    "category_agreement",
    "cohen_kappa",
    "concept_match_rate",
)


def _compare(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("compare", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_compare_writes_json_and_every_table(batch: Batch, tmp_path: Path) -> None:
    crowd_simulate(batch=batch, workers=4, spammers=1, accuracy=0.8)
    verification = verification_batch_create(batch=batch)
    services.batch_publish(batch=verification)
    crowd_simulate(batch=verification, workers=3, spammers=0, accuracy=0.9)
    out, err = _compare(
        str(batch.public_id),
        "--json",
        str(tmp_path / "summary.json"),
        "--tables",
        str(tmp_path / "tables"),
        "--resamples",
        "100",
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in (*REQUIRED, "verification", "layers", "tables"):
        assert key in summary, key
    assert set(summary["layers"]) == {"conv3", "conv4"}
    for layer, scope in summary["layers"].items():
        for key in (*REQUIRED, "verification"):
            assert key in scope, (layer, key)
        assert scope["units"] == 4
        assert set(scope["verification"]) == {"human", "dissection"}
    assert summary["settings"]["n_resamples"] == 100
    written = sorted(p.name for p in (tmp_path / "tables").iterdir())
    assert written == sorted(f"{name}.csv" for name in summary["tables"])
    for name, rows in summary["tables"].items():
        assert len(list(csv.DictReader((tmp_path / "tables" / f"{name}.csv").open()))) == len(rows)
    assert "conv3" in out and "conv4" in out and "(all)" in out and "fleiss_kappa" in out
    for source in ("human", "dissection"):
        entry = summary["verification"][source]
        assert (
            f"verification (all): {source} labels judged correct {entry['correct']}/8 = {entry['share']:.3f}"
            in out
        )
    assert "summary.json" in err


def test_compare_without_answers_and_by_title(batch: Batch) -> None:
    out, _ = _compare("Label units", "--resamples", "10")
    assert "n/a" in out and "conv3" in out


def test_compare_errors(batch: Batch, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no batch 'nope'"):
        _compare("nope")
    with pytest.raises(CommandError, match="does not exist"):
        _compare(str(batch.pk), "--json", str(tmp_path / "missing" / "s.json"))
    (tmp_path / "file").write_text("")
    with pytest.raises(CommandError, match="not a folder"):
        _compare(str(batch.pk), "--tables", str(tmp_path / "file"))
    with pytest.raises(CommandError, match="--resamples must be at least 1"):
        _compare(str(batch.pk), "--resamples", "0")
    assert not (tmp_path / "missing").exists()


def test_simulate_crowd_command(batch: Batch) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "simulate_crowd",
        str(batch.public_id),
        "--workers",
        "10",
        "--spammers",
        "2",
        "--accuracy",
        "0.8",
        "--limit",
        "7",
        stdout=out,
        stderr=err,
    )
    assert "7 answers submitted." in out.getvalue()
    assert "sim-spammer-02" in out.getvalue()
    assert Annotation.objects.filter(assignment__task__batch=batch).count() == 7
    call_command(
        "simulate_crowd",
        "Label units",
        "--workers",
        "10",
        "--spammers",
        "2",
        "--accuracy",
        "0.8",
        stdout=out,
        stderr=err,
    )
    assert Annotation.objects.filter(assignment__task__batch=batch).count() == 8 * batch.assignments_per_task


def test_simulate_crowd_errors(make_batch) -> None:
    draft = make_batch(publish=False)
    with pytest.raises(CommandError, match="publish it first"):
        call_command("simulate_crowd", str(draft.pk), stdout=io.StringIO(), stderr=io.StringIO())
    published = make_batch(title="Published")
    with pytest.raises(CommandError, match="accuracy must be in"):
        call_command(
            "simulate_crowd",
            str(published.pk),
            "--accuracy",
            "1.5",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    with pytest.raises(CommandError, match="limit must be 0 or more"):
        call_command(
            "simulate_crowd", str(published.pk), "--limit", "-1", stdout=io.StringIO(), stderr=io.StringIO()
        )
    assert not Annotation.objects.exists()
