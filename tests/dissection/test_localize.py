"""Localization geometry on hand-made maps, ground-truth readers, and the metrics, against the definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dissection.cam.localize import (
    Box,
    Case,
    Sample,
    cam_box,
    centred_box,
    full_image_box,
    iou,
    largest_component,
    localization_metrics,
    mask_box,
    read_box_csv,
    read_class_names,
    read_xml_boxes,
    threshold_map,
    write_report,
)
from dissection.errors import ProbeSetError


def _iou_by_pixels(a: Box, b: Box, size: int = 40) -> float:
    """The definition: count pixels of the two inclusive boxes on a grid."""
    grid_a = np.zeros((size, size), bool)
    grid_b = np.zeros((size, size), bool)
    grid_a[a.y1 : a.y2 + 1, a.x1 : a.x2 + 1] = True
    grid_b[b.y1 : b.y2 + 1, b.x1 : b.x2 + 1] = True
    return (grid_a & grid_b).sum() / (grid_a | grid_b).sum()


def test_iou_uses_the_inclusive_convention() -> None:
    assert Box(0, 0, 0, 0).area == 1
    assert Box(2, 3, 5, 3).width == 4 and Box(2, 3, 5, 3).height == 1
    assert iou(Box(0, 0, 9, 9), Box(0, 0, 9, 9)) == 1.0
    assert iou(Box(0, 0, 9, 9), Box(5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert iou(Box(0, 0, 4, 4), Box(4, 4, 8, 8)) == pytest.approx(1 / 49)  # one shared pixel
    assert iou(Box(0, 0, 4, 4), Box(5, 5, 8, 8)) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        x1, x2 = sorted(rng.integers(0, 40, 2))
        y1, y2 = sorted(rng.integers(0, 40, 2))
        u1, u2 = sorted(rng.integers(0, 40, 2))
        v1, v2 = sorted(rng.integers(0, 40, 2))
        a, b = Box(int(x1), int(y1), int(x2), int(y2)), Box(int(u1), int(v1), int(u2), int(v2))
        assert iou(a, b) == pytest.approx(_iou_by_pixels(a, b))


def test_threshold_is_twenty_percent_of_the_max_of_the_raw_map() -> None:
    values = np.array([[-5.0, 1.0, 2.0], [1.99, 10.0, 0.0]])
    assert threshold_map(values).tolist() == [[False, False, True], [False, True, False]]
    assert threshold_map(values, 0.5).tolist() == [[False, False, False], [False, True, False]]
    assert not threshold_map(np.full((3, 3), -1.0)).any()  # nothing positive: nothing found


def test_largest_component_uses_eight_connectivity() -> None:
    mask = np.array(
        [
            [1, 0, 0, 0, 1, 1],
            [0, 1, 0, 0, 1, 1],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
        ],
        dtype=bool,
    )
    mask[3, 4] = True
    # The diagonal (five pixels with the one just added) is one component only with 8-connectivity; with
    # 4-connectivity the 2 x 2 block would be the largest.
    largest = largest_component(mask)
    assert largest.sum() == 5
    assert mask_box(largest) == Box(0, 0, 4, 3)
    assert mask_box(largest_component(np.zeros((3, 3), bool))) is None


def test_cam_box_of_a_hand_made_map() -> None:
    raw = np.zeros((4, 4))
    raw[1, 1] = 10.0  # one hot cell of a 4 x 4 map over a 40 x 40 image (10 px per cell)
    raw[3, 3] = 1.0  # below 20 %: ignored
    box = cam_box(raw, 40, 40)
    # Bilinear (half-pixel centres): the value falls linearly from the cell centre at pixel 14.5 to 0 at the
    # neighbouring centres 4.5 and 24.5; at least 2 = 20 % of 10 within 8 px of 14.5, i.e. pixels 7 to 22.
    assert box == Box(7, 7, 22, 22)
    assert cam_box(np.full((4, 4), -1.0), 40, 30) == Box(0, 0, 29, 39)  # nothing positive: whole image


def test_baseline_boxes() -> None:
    assert full_image_box(64, 48) == Box(0, 0, 63, 47)
    assert centred_box(64, 64, 0.5, 0.25) == Box(16, 24, 47, 39)
    assert centred_box(10, 10, 2.0, 2.0) == Box(0, 0, 9, 9)


def _write_png(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def test_read_box_csv_and_its_errors(tmp_path: Path) -> None:
    _write_png(tmp_path / "images" / "a.png", (20, 10))
    _write_png(tmp_path / "images" / "b.png", (20, 10))
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "boxes.csv").write_text(
        "image,class,name,x1,y1,x2,y2\na.png,1,dog,0,0,19,9\na.png,0,cat,2,2,3,3\nb.png,0,cat,1,1,5,5\n"
    )
    samples, classes = read_box_csv(tmp_path)
    assert classes == ["cat", "dog"]
    assert [(s.name, s.label, s.width, s.height) for s in samples] == [
        ("a.png", 1, 20, 10),
        ("b.png", 0, 20, 10),
    ]
    assert samples[0].boxes_of(0) == [Box(2, 2, 3, 3)]
    (tmp_path / "boxes.csv").write_text("image,class,name,x1,y1,x2,y2\na.png,0,cat,0,0,20,9\n")
    outside = r"boxes.csv row 2: box \(0, 0, 20, 9\) lies outside the 20 x 10 image"
    with pytest.raises(ProbeSetError, match=outside):
        read_box_csv(tmp_path)
    (tmp_path / "boxes.csv").write_text("image,class,name,x1,y1,x2,y2\na.png,2,x,0,0,1,1\n")
    with pytest.raises(ProbeSetError, match="row 2: class 2 is not in"):
        read_box_csv(tmp_path)
    (tmp_path / "boxes.csv").write_text("image,class,name,x1,y1,x2,y2\nmissing.png,0,cat,0,0,1,1\n")
    with pytest.raises(ProbeSetError, match=r"row 2: image .*missing\.png does not exist"):
        read_box_csv(tmp_path)
    (tmp_path / "boxes.csv").write_text("image,class,x1,y1\n")
    with pytest.raises(ProbeSetError, match=r"missing columns \['x2', 'y2'\]"):
        read_box_csv(tmp_path)


_VOC = """<annotation><folder>VOC2007</folder><filename>000001.jpg</filename>
<source><database>The VOC2007 Database</database></source><size><width>30</width><height>20</height></size>
<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
<object><name>cat</name><bndbox><xmin>21</xmin><ymin>5</ymin><xmax>25</xmax><ymax>9</ymax></bndbox></object>
</annotation>"""
_ILSVRC = """<annotation><folder>val</folder><filename>ILSVRC2012_val_00000001</filename>
<source><database>ILSVRC_2012</database></source><size><width>30</width><height>20</height></size>
<object><name>n02084071</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>9</xmax><ymax>19</ymax></bndbox></object>
</annotation>"""


def test_read_voc_and_ilsvrc_xml(tmp_path: Path) -> None:
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "000001.xml").write_text(_VOC)
    _write_png(tmp_path / "img" / "000001.jpg", (30, 20))
    (sample,) = read_xml_boxes(tmp_path / "voc", tmp_path / "img", ["cat", "dog"])
    assert sample.boxes == ((1, Box(0, 0, 9, 19)), (0, Box(20, 4, 24, 8)))  # VOC counts from 1
    assert sample.label == 1  # the class covering the most area
    (tmp_path / "ilsvrc").mkdir()
    (tmp_path / "ilsvrc" / "ILSVRC2012_val_00000001.xml").write_text(_ILSVRC)
    _write_png(tmp_path / "img" / "ILSVRC2012_val_00000001.JPEG", (30, 20))
    (sample,) = read_xml_boxes(tmp_path / "ilsvrc", tmp_path / "img", ["n01440764 tench", "n02084071 dog"])
    assert sample.boxes == ((1, Box(0, 0, 9, 19)),) and sample.image.name == "ILSVRC2012_val_00000001.JPEG"
    (sample,) = read_xml_boxes(tmp_path / "ilsvrc", tmp_path / "img", ["x", "n02084071"], one_based=True)
    assert sample.boxes == ((1, Box(0, 0, 8, 18)),)
    unknown = r"000001\.xml object 1: class 'dog' is not one of the model's 1 classes"
    with pytest.raises(ProbeSetError, match=unknown):
        read_xml_boxes(tmp_path / "voc", tmp_path / "img", ["cat"])
    (tmp_path / "voc" / "000001.xml").write_text("<annotation>")
    with pytest.raises(ProbeSetError, match=r"000001\.xml: not valid XML"):
        read_xml_boxes(tmp_path / "voc", tmp_path / "img", ["cat", "dog"])


def test_read_class_names_understands_places365(tmp_path: Path) -> None:
    path = tmp_path / "categories_places365.txt"
    path.write_text("/a/abbey 0\n/a/airplane_cabin 1\n/b/bamboo_forest 2\n")
    assert read_class_names(path) == ["abbey", "airplane_cabin", "bamboo_forest"]
    path.write_text("tench, Tinca tinca\ngoldfish\n")
    assert read_class_names(path) == ["tench, Tinca tinca", "goldfish"]


def test_metrics_follow_their_definitions() -> None:
    def sample(name: str, label: int, truth: Box) -> Sample:
        return Sample(Path(name), name, 20, 20, label, ((label, truth), (1 - label, Box(0, 0, 19, 19))))

    raw = np.zeros((2, 2), np.float32)
    centre_object = Box(5, 5, 14, 14)  # the mean relative size is 0.5: the centred box is exactly this one
    cases = [
        Case(sample("a", 0, centre_object), 0, 0.9, Box(5, 5, 14, 14), 1.0, raw),  # class and box right
        Case(sample("b", 0, centre_object), 1, 0.8, Box(5, 5, 14, 14), 1.0, raw),  # box right, class wrong
        Case(sample("c", 1, centre_object), 1, 0.7, Box(0, 0, 4, 4), 0.0, raw),  # class right, box wrong
        Case(sample("d", 1, centre_object), 0, 0.6, Box(0, 0, 4, 4), 0.0, raw),  # both wrong
    ]
    metrics = localization_metrics(cases)
    assert metrics == {
        "images": 4,
        "classification_top1": 0.5,
        "top1_localization": 0.25,
        "gt_known_localization": 0.5,
        "full_image_gt_known": 0.0,  # a 10 x 10 object in a 20 x 20 image: IoU 0.25
        "centre_box_gt_known": 1.0,
    }


def test_report_gallery_shows_best_and_worst_without_overlap(tmp_path: Path) -> None:
    _write_png(tmp_path / "img.png", (20, 20))
    raw = np.zeros((2, 2), np.float32)
    truth = Box(5, 5, 14, 14)
    cases = [
        Case(Sample(tmp_path / "img.png", f"{i}.png", 20, 20, 0, ((0, truth),)), 0, 0.9, truth, i / 4, raw)
        for i in range(5)
    ]
    write_report(tmp_path / "out", cases, ["thing"], gallery=3)
    page = (tmp_path / "out" / "gallery.html").read_text()
    assert "Best 3 by IoU" in page and "Worst 2 by IoU" in page and page.count("<img ") == 5
    write_report(tmp_path / "none", cases, ["thing"], gallery=0)
    assert "<img " not in (tmp_path / "none" / "gallery.html").read_text()
    assert (tmp_path / "none" / "metrics.json").is_file()
