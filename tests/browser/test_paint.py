"""Paint with units in Chromium: a requester brushes the tree of a hand-built generator's sample away with
the mouse, sees it drawn again without it, undoes, paints a tree back in with the keyboard alone, and
downloads the edited image as a PNG; no console error on the way."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from runs.models import DissectionRun
from tests.browser.pages import Check
from tests.runs.test_paint_page import SIZE, paint_run_create, sample_with_tree

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")]

_PIXELS_JS = """async (img) => {
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
}"""


def red(image: Locator) -> np.ndarray:
    """SIZE x SIZE: the red channel of the image the page shows now."""
    return np.asarray(image.evaluate(_PIXELS_JS), np.uint8).reshape(SIZE, SIZE, 4)[..., 0]


@pytest.fixture
def paint_run(transactional_db: None) -> DissectionRun:
    return paint_run_create()


def test_brush_regenerate_undo_paint_with_the_keyboard_and_download(
    page: Page, check_page: Check, log_in: Callable[[Page], None], paint_run: DissectionRun, tmp_path: Path
) -> None:
    log_in(page)
    page.goto(f"/runs/{paint_run.pk}/paint/")
    check_page(page, "paint")
    status, image, canvas = (
        page.locator("#paint-status"),
        page.locator("#paint-image"),
        page.locator("#paint-canvas"),
    )

    page.get_by_label("Sample number").fill(str(sample_with_tree(True)))
    page.get_by_role("button", name="Show this sample").click()
    expect(status).to_have_text(f"New sample: Sample {sample_with_tree(True)} of seed 0, unedited.")
    plain = red(image)
    assert (plain[:8, :8] == 255).all()  # the tree

    # The mouse brushes the top-left quarter (a zigzag of radius 3 image pixels); letting go applies it.
    page.get_by_label("Brush radius (image pixels)").fill("3")
    page.get_by_label("Remove the concept").check()
    page.get_by_label("Units: the concept's top units by IoU").select_option("1")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + x / SIZE * box["width"], box["y"] + y / SIZE * box["height"]

    page.mouse.move(*at(1, 2))
    page.mouse.down()
    for x, y in ((7, 2), (7, 6), (1, 6)):
        page.mouse.move(*at(x, y), steps=4)
    page.mouse.up()
    expect(status).to_contain_text("Removed tree with 1 unit (3).")
    removed = red(image)
    assert (removed[:8, :8] == 0).all() and np.array_equal(removed[8:], plain[8:])
    expect(page.locator("#paint-edits li")).to_have_text(["Removed tree with 1 unit (3)"])
    check_page(page, "paint_removed")

    page.get_by_role("button", name="Undo").click()
    expect(status).to_contain_text("Undid: Removed tree")
    assert np.array_equal(red(image), plain)
    expect(page.get_by_role("button", name="Undo")).to_be_disabled()

    # The keyboard alone: focus the brush area, move to the bottom right, hold Space while moving, Enter.
    page.get_by_label("Add the concept").check()
    canvas.focus()
    for key in ["ArrowDown"] * 12 + ["ArrowRight"] * 12:
        page.keyboard.press(key)
    page.keyboard.down(" ")
    for key in ("ArrowRight", "ArrowDown", "ArrowLeft"):
        page.keyboard.press(key)
    page.keyboard.up(" ")
    page.keyboard.press("Enter")
    expect(status).to_contain_text("Added tree with 1 unit (3).")
    added = red(image)
    assert (added[12:16, 12:16] == 255).all() and np.array_equal(added[:8], plain[:8])

    with page.expect_download() as download:
        page.get_by_role("link", name="Download PNG").click()
    path = tmp_path / "edited.png"
    download.value.save_as(path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    saved = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))
    assert download.value.suggested_filename.endswith("-edited.png") and np.array_equal(saved[..., 0], added)

    page.get_by_role("button", name="Reset").click()
    expect(status).to_contain_text("Every edit removed.")
    assert np.array_equal(red(image), plain)
