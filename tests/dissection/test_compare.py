"""`dissection.compare` against figures computed by hand on small result sets, the compare CLI, bad input,
and a real training series of the toy network with a fine-tuned copy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dissection.cli import main
from dissection.compare import CompareError, RunSpec, compare, layer_summary, load_runs, transition

CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]
# channel: (label, category, IoU) before and after; the threshold is 0.04 (strictly above is interpretable)
BEFORE = [
    ("dog", "object", 0.10),
    ("grass", "material", 0.08),
    ("red-c", "color", 0.02),
    ("wheel", "part", 0.05),
    ("x", "color", 0.01),
    ("house", "object", 0.20),
    ("floor", "material", 0.06),
    ("wood", "material", 0.06),
]
AFTER = [
    ("dog", "object", 0.12),  # kept
    ("sky", "object", 0.07),  # changed, weaker side 0.07
    ("wheel", "part", 0.09),  # gained
    ("wheel", "part", 0.01),  # lost
    ("y", "color", 0.02),  # neither
    ("tree", "object", 0.30),  # changed, weaker side 0.20
    ("dog", "object", 0.06),  # changed, 0.06 (a tie with channel 7: channel order)
    ("car", "object", 0.06),  # changed, 0.06
]


def _document(
    units: list[tuple[str, str, float]],
    *,
    layer: str = "conv4",
    probe_set: str = "/data/probe",
    semantics: str = "paper",
) -> dict[str, Any]:
    return {
        "schema": 1,
        "layer": layer,
        "semantics": semantics,
        "probe_set": probe_set,
        "num_images": 10,
        "num_units": len(units),
        "topk": 2,
        "iou_threshold": 0.04,
        "categories": CATEGORIES,
        "units": [
            {
                "unit": channel + 1,
                "channel": channel,
                "threshold": 1.0,
                "label": label,
                "category": category,
                "iou": iou,
                "interpretable": iou > 0.04,
                "concepts": [],
                "strip": "",
                "images": [],
            }
            for channel, (label, category, iou) in enumerate(units)
        ],
    }


def _write(folder: Path, *documents: dict[str, Any]) -> Path:
    for document in documents:
        (folder / document["layer"]).mkdir(parents=True, exist_ok=True)
        (folder / document["layer"] / "result.json").write_text(json.dumps(document))
    return folder


def _empty(folder: Path) -> Path:
    (folder / "empty").mkdir()
    return folder / "empty"


def test_layer_figures_equal_the_hand_counts() -> None:
    before = layer_summary(_document(BEFORE))
    assert (before["units"], before["interpretable"], before["unique_concepts"]) == (8, 6, 6)
    assert {c: (f["units"], f["unique_concepts"]) for c, f in before["per_category"].items()} == {
        "color": (0, 0),
        "object": (2, 2),
        "part": (1, 1),
        "material": (3, 3),
        "scene": (0, 0),
        "texture": (0, 0),
    }
    assert before["per_category"]["material"]["share"] == pytest.approx(3 / 6)
    after = layer_summary(_document(AFTER))
    assert (after["interpretable"], after["unique_concepts"]) == (6, 5)  # "dog" twice counts once
    assert (after["per_category"]["object"]["units"], after["per_category"]["object"]["unique_concepts"]) == (
        5,
        4,
    )
    assert after["per_category"]["object"]["share"] == pytest.approx(5 / 6)
    stricter = layer_summary(_document(BEFORE), iou_threshold=0.065)
    assert (stricter["interpretable"], stricter["iou_threshold"]) == (3, 0.065)
    dead = layer_summary(_document([(label, cat, 0.01) for label, cat, _ in BEFORE]))
    assert dead["interpretable"] == dead["unique_concepts"] == 0
    assert {f["share"] for f in dead["per_category"].values()} == {0.0}


def test_the_unit_by_unit_transition_equals_the_hand_counts() -> None:
    result = transition(_document(BEFORE), _document(AFTER))
    assert result["counts"] == {"kept": 1, "changed": 4, "gained": 1, "lost": 1, "neither": 1}
    assert [row["status"] for row in result["units"]] == [
        "kept",
        "changed",
        "gained",
        "lost",
        "neither",
        "changed",
        "changed",
        "changed",
    ]
    assert result["changed_most"] == [5, 1, 6, 7]
    assert result["units"][5] == {
        "channel": 5,
        "unit": 6,
        "status": "changed",
        "before": {"label": "house", "category": "object", "iou": 0.20, "interpretable": True},
        "after": {"label": "tree", "category": "object", "iou": 0.30, "interpretable": True},
    }
    categories = result["categories"]
    assert categories == [*CATEGORIES, "none"]
    cell = {
        (categories[i], categories[j]): v
        for i, row in enumerate(result["matrix"])
        for j, v in enumerate(row)
        if v
    }
    assert cell == {
        ("object", "object"): 2,
        ("material", "object"): 3,
        ("none", "part"): 1,
        ("part", "none"): 1,
        ("none", "none"): 1,
    }


def test_runs_in_step_order_give_series_and_consecutive_transitions(tmp_path: Path) -> None:
    dead = _document([(label, cat, 0.01) for label, cat, _ in BEFORE])
    specs = [
        RunSpec("before", _write(tmp_path / "b", _document(BEFORE)), step=100, tags={"stage": "before"}),
        RunSpec("after", _write(tmp_path / "a", _document(AFTER)), step=200),
        RunSpec("start", _write(tmp_path / "s", dead), step=50),
    ]
    document = compare(load_runs(specs))
    assert [run["name"] for run in document["runs"]] == ["start", "before", "after"]
    series = document["series"]["conv4"]
    assert (series["steps"], series["interpretable"], series["unique_concepts"]) == (
        [50, 100, 200],
        [0, 6, 6],
        [0, 6, 5],
    )
    assert series["unique_per_category"]["object"] == [0, 2, 4]
    assert [(t["before"], t["after"]) for t in document["transitions"]] == [
        ("start", "before"),
        ("before", "after"),
    ]
    assert document["transitions"][0]["counts"]["gained"] == 6


def test_layers_of_different_widths_get_figures_but_no_transition(tmp_path: Path) -> None:
    specs = [
        RunSpec("wide", _write(tmp_path / "w", _document(BEFORE))),
        RunSpec("narrow", _write(tmp_path / "n", _document(AFTER[:4]))),
    ]
    document = compare(load_runs(specs))
    assert document["transitions"] == [] and document["series"] == {}
    assert "8 and 4 units" in document["notes"][0]
    assert document["layers"]["conv4"]["narrow"]["interpretable"] == 3


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda t: [RunSpec("one", _write(t / "1", _document(BEFORE)))], "at least two runs"),
        (
            lambda t: [RunSpec("a", _write(t / "1", _document(BEFORE))), RunSpec("b", t / "missing")],
            "missing: no such folder (run 'b')",
        ),
        (
            lambda t: [RunSpec("a", _write(t / "1", _document(BEFORE))), RunSpec("b", _empty(t))],
            "holds no result.json",
        ),
        (
            lambda t: [
                RunSpec("a", _write(t / "1", _document(BEFORE))),
                RunSpec("b", _write(t / "2", _document(AFTER, probe_set="/elsewhere"))),
            ],
            "different probe sets",
        ),
        (
            lambda t: [
                RunSpec("a", _write(t / "1", _document(BEFORE))),
                RunSpec("b", _write(t / "2", _document(AFTER, semantics="netdissect-lite"))),
            ],
            "different semantics",
        ),
        (
            lambda t: [
                RunSpec("a", _write(t / "1", _document(BEFORE))),
                RunSpec("b", _write(t / "2", _document(AFTER, layer="conv3"))),
            ],
            "share no layer",
        ),
        (
            lambda t: [
                RunSpec("a", _write(t / "1", _document(BEFORE))),
                RunSpec("a", _write(t / "2", _document(AFTER))),
            ],
            "'a' given twice",
        ),
    ],
)
def test_results_that_cannot_be_compared_are_refused(tmp_path: Path, make: Any, message: str) -> None:
    with pytest.raises(CompareError, match=re.escape(message)):
        load_runs(make(tmp_path))


def test_allow_mismatch_compares_other_probe_sets(tmp_path: Path) -> None:
    specs = [
        RunSpec("a", _write(tmp_path / "1", _document(BEFORE))),
        RunSpec("b", _write(tmp_path / "2", _document(AFTER, probe_set="/elsewhere"))),
    ]
    assert len(compare(load_runs(specs, allow_mismatch=True))["transitions"]) == 1


def test_the_cli_writes_json_and_a_page_or_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = (
        _write(tmp_path / "first", _document(BEFORE)),
        _write(tmp_path / "second", _document(AFTER)),
    )
    out = tmp_path / "out"
    bad = ["compare", str(first), "--out", str(out)]
    assert main(bad) == 2 and "at least two runs" in capsys.readouterr().err and not out.exists()
    mismatch = ["compare", str(first), str(second), "--step", "1", "--out", str(out)]
    assert main(mismatch) == 2 and "--step is given 1 times for 2 folders" in capsys.readouterr().err
    args = [
        "compare",
        str(first),
        str(second),
        "--name",
        "before",
        "--name",
        "after",
        "--tag",
        "arch=toy,stage=0",
        "--tag",
        "arch=toy,stage=1",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    document = json.loads((out / "compare.json").read_text())
    assert [run["tags"] for run in document["runs"]] == [
        {"arch": "toy", "stage": "0"},
        {"arch": "toy", "stage": "1"},
    ]
    page = (out / "compare.html").read_text()
    assert 'role="img" aria-label="Unique concepts detected per category in layer conv4' in page
    assert "house" in page and "tree" in page and "<script" not in page


@pytest.mark.slow
def test_a_real_training_series_and_a_fine_tuned_copy(probe_set_dir: Path, tmp_path: Path) -> None:
    from dissection.train import checkpoint_series, train_toy

    final = train_toy(probe_set_dir, tmp_path / "toy.pt", epochs=6, save_every=2, progress=False)
    series = checkpoint_series(final)
    assert [p.name for p in series] == ["toy-epoch002.pt", "toy-epoch004.pt", "toy.pt"]
    tuned = train_toy(
        probe_set_dir, tmp_path / "scene.pt", epochs=2, target="scene", finetune=final, progress=False
    )
    folders = []
    for checkpoint in [*series, tuned]:
        out = tmp_path / "dissect" / checkpoint.stem
        assert (
            main(
                [
                    "run",
                    "--probe-set",
                    str(probe_set_dir),
                    "--model",
                    "toy",
                    "--weights",
                    str(checkpoint),
                    "--layer",
                    "conv4",
                    "--topk",
                    "2",
                    "--workers",
                    "0",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        folders.append(str(out))
    out = tmp_path / "compare"
    args = [
        "compare",
        *folders,
        "--step",
        "12",
        "--step",
        "24",
        "--step",
        "36",
        "--step",
        "48",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    document = json.loads((out / "compare.json").read_text())
    assert len(document["runs"]) == 4 and len(document["transitions"]) == 3
    assert document["series"]["conv4"]["steps"] == [12, 24, 36, 48]
    assert all(t["counts"] and sum(t["counts"].values()) == 128 for t in document["transitions"])
    import torch

    assert torch.load(tuned, weights_only=True)["classes"][-1] == "none"
    assert torch.load(series[0], weights_only=True)["epoch"] == 2
