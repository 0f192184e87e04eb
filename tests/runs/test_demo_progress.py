"""`make run` says what it builds: the demo's synthetic probe set announces itself before the wait, and a
cached one is taken silently."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from runs import demo


def test_building_the_probe_set_says_so_and_a_cached_one_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "PROBE_IMAGES", 4)
    monkeypatch.setattr(demo, "PROBE_SIZE", 32)
    first, second = io.StringIO(), io.StringIO()
    folder = demo.probe_set_folder(tmp_path, progress=first)
    assert first.getvalue() == f"Building the synthetic probe set (4 images of 32 px) in {folder}\n"
    assert (folder / "index.csv").is_file() and folder == tmp_path / "probe-set"
    assert demo.probe_set_folder(tmp_path, progress=second) == folder
    assert second.getvalue() == ""
