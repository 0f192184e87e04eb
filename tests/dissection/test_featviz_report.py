"""report.html with a `featviz` folder: each unit's feature visualizations beside its strip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dissection.errors import DissectionError

LAYER = "conv4"


def minimal_result_json(channels: int) -> dict[str, Any]:
    """A minimal result.json of conv4, enough for report.html."""
    units = [
        {
            "unit": c + 1,
            "channel": c,
            "label": "red",
            "category": "color",
            "iou": 0.1,
            "interpretable": True,
            "strip": f"strips/unit_{c + 1:04d}.jpg",
            "concepts": [{"label": "red", "iou": 0.1}],
        }
        for c in range(channels)
    ]
    return {
        "layer": LAYER,
        "num_units": channels,
        "num_images": 8,
        "semantics": "paper",
        "topk": 4,
        "iou_threshold": 0.04,
        "categories": ["color"],
        "summary": {"interpretable": channels, "unique_concepts": 1, "per_category": {}, "per_concept": {}},
        "units": units,
    }


def test_a_report_of_a_command_line_featviz_folder(tmp_path: Path) -> None:
    from dissection.cli import main
    from dissection.render import write_report

    layer_dir = tmp_path / "out" / LAYER
    layer_dir.mkdir(parents=True)
    (layer_dir / "result.json").write_text(json.dumps(minimal_result_json(3)))
    folder = tmp_path / "fv"
    folder.mkdir()
    document = {
        "layer": LAYER,
        "images": [{"file": "unit_0002.png", "channel": 1, "direction": "positive", "index": 0}],
        "units": [{"channel": 1, "relative_activation": 1.75}],
    }
    (folder / "featviz.json").write_text(json.dumps(document))
    assert main(["report", str(layer_dir), "--featviz", str(folder)]) == 0
    page = (layer_dir / "report.html").read_text()
    assert page.count("<figure") == 1 and 'src="../../fv/unit_0002.png"' in page and "1.75×" in page
    write_report(layer_dir)
    assert "<figure" not in (layer_dir / "report.html").read_text()
    document["layer"] = "conv3"
    (folder / "featviz.json").write_text(json.dumps(document))
    with pytest.raises(DissectionError, match="visualizes layer 'conv3', not 'conv4'"):
        write_report(layer_dir, folder)
