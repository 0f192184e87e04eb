"""Shard results are rewritten in place: a repeated delivery replaces the file under the same key, and a
worker killed mid-write leaves the earlier file whole (the run it belongs to still finds it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runs.storage import fetch, store_bytes, store_file


def test_a_rewritten_key_keeps_its_name_and_takes_the_new_bytes(media: Path, tmp_path: Path) -> None:
    key = "runs/7/conv3/tally/merged.npz"
    assert store_bytes(key, b"first") == key
    source = tmp_path / "second.bin"
    source.write_bytes(b"second delivery")
    assert store_file(key, source) == key
    assert (media / key).read_bytes() == b"second delivery"
    assert sorted(p.name for p in (media / key).parent.iterdir()) == ["merged.npz"]
    assert fetch(key, tmp_path / "back.npz").read_bytes() == b"second delivery"


def test_a_write_killed_before_it_lands_leaves_the_earlier_file(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "runs/7/conv3/tally/merged.npz"
    store_bytes(key, b"whole")

    def killed(*args: object) -> None:
        raise SystemExit("SIGKILL")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(SystemExit):
        store_bytes(key, b"never lands")
    assert (media / key).read_bytes() == b"whole"
    assert sorted(p.name for p in (media / key).parent.iterdir()) == ["merged.npz"]


def test_a_key_outside_the_media_root_is_refused(media: Path) -> None:
    from django.core.exceptions import SuspiciousFileOperation

    with pytest.raises(SuspiciousFileOperation):
        store_bytes("../escaped.npz", b"x")
    assert not (media.parent / "escaped.npz").exists()
