"""The report's strips and the full-size tiles made on demand, against the tiles the earlier code wrote for
every unit during the run (its rule written out again below): same highlight rule, images and order, pixel
for pixel; and a run's cost kept off top-k (no tile written, strips of at most STRIP_IMAGES thumbnails)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dissection import render
from dissection.broden import load_probe_set
from dissection.cli import main
from dissection.pipeline import dissect
from dissection.synth import make_probe_set

UNITS, MAP = 12, 7


def _tiles_as_before(images: np.ndarray, maps: np.ndarray, threshold: float) -> np.ndarray:
    """The tile rule as the run used to apply it to every unit: bilinear upsampling of the map to the image
    (align_corners=False, float32), inside (> T) as is, outside at round(0.2 x value)."""
    up = F.interpolate(
        torch.from_numpy(maps.astype(np.float32)).unsqueeze(1),
        size=images.shape[1:3],
        mode="bilinear",
        align_corners=False,
    )[:, 0]
    inside = (up > threshold).numpy()[..., None]
    dimmed = np.rint(np.arange(256) * 0.2).astype(np.uint8)[images]
    return np.where(inside, images, dimmed)


def _jpeg_as_before(tile: np.ndarray, tmp_path: Path) -> bytes:
    path = tmp_path / "before.jpg"
    Image.fromarray(tile).save(path, quality=90)
    return path.read_bytes()


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A layer dissected from precomputed activations (so the reference reads the very same maps) on a probe
    set of 128-px images (thumbnails are smaller than the images), top-k 12."""
    root = tmp_path_factory.mktemp("thumbs")
    probe_dir = make_probe_set(root / "probe", images=24, size=128, seed=3)
    rng = np.random.default_rng(0)
    acts = rng.gamma(1.0, 1.0, (24, UNITS, MAP, MAP)).astype(np.float32)
    acts[:, :, 2:4, 3:5] += rng.gamma(2.0, 2.0, (24, UNITS, 1, 1)).astype(np.float32)
    np.save(root / "acts.npy", acts)
    out = dissect(probe_dir, root / "out", layers=["conv"], activations=root / "acts.npy", topk=12, workers=0)
    return out["conv"], acts


def test_a_run_writes_strips_and_maps_but_no_tile(layer: tuple[Path, np.ndarray]) -> None:
    folder, acts = layer
    document = json.loads((folder / "result.json").read_text())
    assert not (folder / "tiles").exists()
    stored = np.load(folder / "maps.npy")
    assert stored.shape == (UNITS, 12, MAP, MAP)
    for unit in document["units"]:
        rows = [entry["index"] for entry in unit["images"]]
        np.testing.assert_array_equal(stored[unit["channel"], : len(rows)], acts[rows, unit["channel"]])
        with Image.open(folder / unit["strip"]) as strip:
            assert strip.size == (render.STRIP_IMAGES * 96 + (render.STRIP_IMAGES - 1) * 4, 96)


def test_strips_are_the_tile_rule_applied_to_thumbnails(
    layer: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder, acts = layer
    document = json.loads((folder / "result.json").read_text())
    probe = load_probe_set(document["probe_set"])
    written: dict[str, np.ndarray] = {}
    monkeypatch.setattr(
        render, "_write_jpeg", lambda image, path: written.__setitem__(path.name, np.asarray(image))
    )
    render.render_strips(document, probe, tmp_path, np.load(folder / "maps.npy"))
    assert len(written) == UNITS
    for unit in document["units"]:
        shown = unit["images"][: render.STRIP_IMAGES]
        thumbs = np.stack(
            [
                np.asarray(
                    Image.fromarray(probe.load_image(e["index"])).resize((96, 96), Image.Resampling.BILINEAR)
                )
                for e in shown
            ]
        )
        tiles = _tiles_as_before(
            thumbs, acts[[e["index"] for e in shown], unit["channel"]], unit["threshold"]
        )
        expected = np.full((96, len(shown) * 100 - 4, 3), 255, np.uint8)
        for i, tile in enumerate(tiles):
            expected[:, i * 100 : i * 100 + 96] = tile
        got = written[Path(unit["strip"]).name]
        assert got.shape == expected.shape and np.array_equal(got, expected), unit["unit"]
        assert ((got != 255).any(axis=2).any(axis=0)).sum() > 0


def test_thresholds_on_the_edge_of_float32_compare_as_the_tile_rule(tmp_path: Path) -> None:
    """The strips compare all units at once with float32 thresholds; the tile rule compares with the Python
    float. Thresholds a hair above and below upsampled values must still decide alike."""
    probe = load_probe_set(make_probe_set(tmp_path / "probe", images=2, size=96, seed=1))
    maps = np.random.default_rng(1).random((2, 1, 4, 4)).astype(np.float32)
    up = F.interpolate(torch.from_numpy(maps[:, 0]).unsqueeze(1), size=(96, 96), mode="bilinear")[:, 0]
    units = []
    for k, value in enumerate(up.flatten()[::997].tolist()[:8]):
        for delta in (-1e-12, 0.0, 1e-12, float(np.spacing(np.float32(value))) / 2):
            units.append(
                {
                    "channel": 0,
                    "threshold": value + delta,
                    "strip": f"strips/u{k}-{delta}.jpg",
                    "images": [{"index": 0}, {"index": 1}],
                }
            )
    written: dict[str, np.ndarray] = {}
    original = render._write_jpeg
    try:
        render._write_jpeg = lambda image, path: written.__setitem__(str(path), np.asarray(image))  # type: ignore[assignment]
        unit_maps = np.broadcast_to(maps[:, 0], (len(units), 2, 4, 4))
        render.render_strips({"units": units}, probe, tmp_path, unit_maps)
    finally:
        render._write_jpeg = original  # type: ignore[assignment]
    images = np.stack([probe.load_image(0), probe.load_image(1)])
    for unit in units:
        tiles = _tiles_as_before(images, maps[:, 0], unit["threshold"])
        assert np.array_equal(
            written[str(tmp_path / unit["strip"])],
            np.concatenate([tiles[0], np.full((96, 4, 3), 255, np.uint8), tiles[1]], 1),
        )


def test_tiles_made_on_demand_equal_the_tiles_the_run_wrote_before(
    layer: tuple[Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, acts = layer
    document = json.loads((folder / "result.json").read_text())
    probe = load_probe_set(document["probe_set"])
    assert main(["tiles", str(folder), "--unit", "3", "--unit", "12"]) == 0
    assert "unit 3:" in capsys.readouterr().out
    for number in (3, 12):
        unit = document["units"][number - 1]
        assert unit["unit"] == number and unit["channel"] == number - 1
        rows = [entry["index"] for entry in unit["images"]]
        images = np.stack([probe.load_image(i) for i in rows])
        tiles = _tiles_as_before(images, acts[rows, number - 1], unit["threshold"])
        assert np.array_equal(render.unit_tiles(images, acts[rows, number - 1], unit["threshold"]), tiles)
        assert len(unit["images"]) == 12
        for entry, tile in zip(unit["images"], tiles, strict=True):
            made = (folder / entry["tile"]).read_bytes()
            assert made == _jpeg_as_before(tile, tmp_path)
    assert not (folder / document["units"][0]["images"][0]["tile"]).exists()


def test_progress_has_a_fixed_total_per_phase(layer: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, _ = layer
    document = json.loads((folder / "result.json").read_text())
    events: list[tuple[str, int, int]] = []
    dissect(
        document["probe_set"],
        tmp_path / "again",
        layers=["conv"],
        activations=folder.parent.parent / "acts.npy",
        topk=12,
        workers=0,
        batch_size=5,
        progress=lambda *event: events.append(event),
    )
    phases = list(dict.fromkeys(phase for phase, _, _ in events))
    assert phases == ["scan", "tally conv", "report conv"]
    for phase in phases:
        mine = [(done, total) for name, done, total in events if name == phase]
        assert len({total for _, total in mine}) == 1
        dones = [done for done, _ in mine]
        assert dones == sorted(dones) and dones[-1] == mine[0][1]
