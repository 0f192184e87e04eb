"""report.html names units as tally.csv does (unit = channel + 1), links each to the service's unit page when
given where, and shows concepts without Broden's suffixes, as does the command line's summary (result.json
keeps them)."""

from __future__ import annotations

import json
from pathlib import Path

from dissection.render import UNIT_PLACEHOLDER, report_html, write_report
from dissection.results import summary_line
from tests.dissection.test_featviz_report import LAYER, minimal_result_json


def _document() -> dict:
    document = minimal_result_json(3)
    document["units"][1] |= {
        "label": "white-c",
        "concepts": [{"label": "white-c", "iou": 0.1}, {"label": "meadow-s", "iou": 0.05}],
    }
    document["summary"]["per_concept"] = {"white-c": 1, "red": 2}
    return document


def test_units_link_by_their_number_and_concepts_drop_broden_suffixes(tmp_path: Path) -> None:
    page = report_html(_document(), unit_href=f"/runs/7/layers/{LAYER}/units/{UNIT_PLACEHOLDER}/")
    for number in (1, 2, 3):
        assert f'<h3><a href="/runs/7/layers/conv4/units/{number}/">unit {number}</a> ' in page
    assert "<small>channel 1 ·" in page  # unit 2 is channel 1
    assert "white-c" not in page and "meadow-s" not in page
    assert ">white</b>" in page and "also: meadow 0.050" in page and ">white</text>" in page

    layer_dir = tmp_path / LAYER
    layer_dir.mkdir()
    (layer_dir / "result.json").write_text(json.dumps(_document()))
    plain = write_report(layer_dir).read_text()
    assert "<h3>unit 2 <b" in plain and "<a href" not in plain  # the command line's report links nowhere
    assert json.loads((layer_dir / "result.json").read_text())["units"][1]["label"] == "white-c"
    assert summary_line(layer_dir).endswith("(white 1, red 2)")  # what `dissection run` prints per layer
