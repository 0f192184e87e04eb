"""Dashboard plots: valid, accessible, inline-ready SVG for empty, one-unit and many-unit batches."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from agreement.categories import CODES
from agreement.plots import (
    agreement_bars_svg,
    confusion_heatmap_svg,
    iou_agreement_scatter_svg,
    summary_plots,
)
from agreement.records import Answer, UnitRecord, VerificationAnswer
from agreement.summary import summarize

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    assert svg.startswith("<svg"), "no XML prolog, so it can be inlined in HTML"
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    return root


def _texts(root: ET.Element) -> str:
    return " ".join("".join(element.itertext()) for element in root.iter(f"{SVG}text"))


def test_confusion_heatmap_has_title_axis_labels_and_counts() -> None:
    matrix = np.diag([3, 1, 4, 1, 5, 9]).tolist()
    matrix[0][2] = 2
    root = _parse(confusion_heatmap_svg(matrix, title="conv5: human vs dissection"))
    assert root.find(f"{SVG}title").text == "conv5: human vs dissection"
    assert "25 units; 23 with the same category" in root.find(f"{SVG}desc").text
    texts = _texts(root)
    for label in (
        "conv5: human vs dissection",
        "Human consensus",
        "Region or surface",
        "Simple elements or colors",
        "9",
    ):
        assert label in texts


def test_confusion_heatmap_rejects_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 2\); expected 6 × 6"):
        confusion_heatmap_svg([[1, 0], [0, 1]])


def test_agreement_bars_draw_intervals_and_mark_undefined_values() -> None:
    svg = agreement_bars_svg(
        ["conv3", "conv5"],
        {
            "Fleiss' κ": [(0.4, 0.3, 0.5), (None, None, None)],
            "Word agreement": [(0.7, None, None), (0.8, 0.7, 0.9)],
        },
        title="Agreement & intervals",
    )
    root = _parse(svg)
    assert root.find(f"{SVG}title").text == "Agreement & intervals"
    texts = _texts(root)
    for label in (
        "Agreement & intervals",
        "conv3",
        "conv5",
        "Fleiss' κ",
        "Word agreement",
        "n/a",
        "95 % interval",
    ):
        assert label in texts
    assert "conv5 n/a" in root.find(f"{SVG}desc").text
    with pytest.raises(ValueError, match="series 'x' has 1 values for 2 layers"):
        agreement_bars_svg(["a", "b"], {"x": [(0.1, None, None)]})


def test_scatter_colours_layers_and_shows_the_threshold() -> None:
    root = _parse(
        iou_agreement_scatter_svg([("conv3", 0.02, 0.5), ("conv5", 0.12, 1.0), ("conv5", 0.08, 0.66)])
    )
    texts = _texts(root)
    assert "conv3" in texts and "conv5" in texts and "IoU = 0.04" in texts
    assert "3 units in 2 layers" in root.find(f"{SVG}desc").text


@pytest.mark.parametrize(
    "render",
    [
        lambda: confusion_heatmap_svg([]),
        lambda: confusion_heatmap_svg(np.zeros((6, 6))),
        lambda: agreement_bars_svg([], {}),
        lambda: iou_agreement_scatter_svg([]),
    ],
)
def test_every_plot_renders_with_empty_input(render) -> None:
    texts = _texts(_parse(render()))
    assert "No " in texts and "yet" in texts


def _records(count: int) -> list[UnitRecord]:
    rng = np.random.default_rng(count)
    records = []
    for i in range(count):
        code = CODES[i % 6]
        answers = tuple(
            Answer(
                f"w{w}", "dog" if rng.random() < 0.7 else "cat", code if rng.random() < 0.8 else "scene", 0.8
            )
            for w in range(3)
        )
        records.append(
            UnitRecord(f"u{i}", f"layer{i % 2}", "dog", "object", float(rng.random() / 10), answers)
        )
    return records


@pytest.mark.parametrize("count", [0, 1, 40])
def test_summary_plots_render_for_zero_one_and_many_units(count: int) -> None:
    plots = summary_plots(summarize(_records(count), n_resamples=30))
    assert set(plots) == {"confusion", "agreement", "scatter"}
    ids = []
    for svg in plots.values():
        root = _parse(svg)
        ids += [element.get("id") for element in root.iter() if element.get("id")]
    assert len(ids) == len(set(ids)), "ids stay unique when the three plots share one page"
    if count == 40:
        assert "layer0" in _texts(ET.fromstring(plots["agreement"]))
        assert "40 units" in ET.fromstring(plots["confusion"]).find(f"{SVG}desc").text


def test_plots_are_reproducible() -> None:
    summary = summarize(_records(12), n_resamples=30)
    assert summary_plots(summary) == summary_plots(summary)


def test_summary_plots_add_the_verification_bars_when_answers_exist() -> None:
    records = _records(6)
    verification = [
        VerificationAnswer(r.unit_key, r.layer, source, worker, yes)
        for r in records
        for source, yes in (("human", True), ("dissection", r.unit_key != "u0"))
        for worker in ("a", "b", "c")
    ]
    plots = summary_plots(summarize(records, verification=verification, n_resamples=30))
    assert "verification" not in summary_plots(summarize(records, n_resamples=30))
    root = _parse(plots["verification"])
    assert root.find(f"{SVG}title").text == (
        "Labels judged correct in blind verification\n"
        "human labels: 6 units · 18 judgements and dissection labels: 6 units · 18 judgements"
    )
    assert "Network Dissection label: layer0 0.67, layer1 1.00" in root.find(f"{SVG}desc").text


def test_every_summary_plot_says_how_many_units_and_answers_it_rests_on() -> None:
    records = _records(10)
    one_answer = UnitRecord("lone", "layer0", "dog", "object", 0.05, (Answer("w0", "dog", "object", 0.8),))
    plots = summary_plots(summarize([*records, one_answer], n_resamples=20))
    # 10 counted units of three answers each; the unit with one answer (below the minimum of 2) is left out
    agreement = _parse(plots["agreement"])
    assert agreement.find(f"{SVG}title").text.endswith(
        "10 units · 30 answers on units with at least 2 answers"
    )
    texts = _texts(agreement)
    assert "5 units · 15 answers" in texts  # under each layer's name
    assert _parse(plots["confusion"]).find(f"{SVG}title").text.endswith("\n10 units · 30 answers")
    scatter = _parse(plots["scatter"]).find(f"{SVG}title").text
    assert scatter.endswith("\n10 units · 30 answers")


def test_every_text_is_drawn_literally_even_with_dollar_signs() -> None:
    """A `$` in a layer name or label must not start mathtext (a parse error was a 500 on the dashboard)."""
    layer, label = "conv$4", "share $x$_^ of $^_$"
    bars = _texts(
        _parse(
            agreement_bars_svg(
                [layer, "conv5"],
                {label: [(0.5, 0.4, 0.6), (0.7, None, None)]},
                title=f"Agreement in $x$_^ {layer}",
                ylabel="$x$_^",
            )
        )
    )
    for text in (layer, label, "Agreement in $x$_^ conv$4", "$x$_^ (bars: 95 % interval)"):
        assert text in bars
    scatter = _texts(_parse(iou_agreement_scatter_svg([(layer, 0.1, 0.5)], xlabel=label)))
    assert layer in scatter and label in scatter
    heatmap = _texts(_parse(confusion_heatmap_svg(np.eye(2, dtype=int).tolist(), labels=["$x$_^", "$^_$"])))
    assert "$x$_^" in heatmap and "$^_$" in heatmap
    answers = (Answer("a", "dog", "object"), Answer("b", "dog", "object"))
    records = [UnitRecord(f"u{i}", layer, "dog", "object", 0.1, answers) for i in range(3)]
    plots = summary_plots(summarize(records, n_resamples=10))
    assert layer in _texts(_parse(plots["agreement"])) and layer in _texts(_parse(plots["scatter"]))


def test_legend_shows_names_that_start_with_an_underscore() -> None:
    """matplotlib hides legend entries labelled "_…"; a layer or series may well be called that."""
    assert "_private" in _texts(_parse(iou_agreement_scatter_svg([("_private", 0.1, 0.5)])))
    assert "_series" in _texts(_parse(agreement_bars_svg(["conv5"], {"_series": [(0.5, None, None)]})))
