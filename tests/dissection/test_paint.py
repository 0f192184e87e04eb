"""Paint with units: on the hand-built generator whose unit 3 draws a tree (red) in the top-left quarter, as
the exact red segmenter measures, removing the unit inside a brushed region removes the tree there and
changes no pixel outside; adding it draws the tree where brushed; no edit gives the dissection's sample. The
brush reaches the layer's grid by area (checked against a cell-by-cell count), and resuming after the layer
gives what a forward hook over the whole generator gives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dissection.errors import DissectionError
from dissection.gan.models import Generator
from dissection.gan.paint import BrushEdit, Painter, layer_cells
from dissection.gan.samples import generate_samples, generated_samples
from dissection.gan.toys import ToyGenerator

from .test_gan import TREE_CHANNEL, HandGenerator, hand_generator, red_segmenter

SEED = 0
CELL = 4  # the hand-built render draws each 4 x 4 layer cell as 4 x 4 pixels


def tree_pixels(image: np.ndarray) -> np.ndarray:
    """H x W bool: the pixels the red segmenter labels tree (label number 1)."""
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    return red_segmenter().layers(pixels)[0, 0] == 1


def samples(generator: Generator, tree: bool) -> list[int]:
    """Indices among the first 200 of SEED whose tree unit draws (z0 > 1.5) or does not."""
    z0 = generator.latents(SEED, np.arange(200))[:, 0]
    return [int(i) for i in np.flatnonzero(((z0 > 1.5) == tree).numpy())]


def brush(*boxes: tuple[int, int, int, int], size: int = 16) -> np.ndarray:
    """A mask of `size` px with rows y0:y1 and columns x0:x1 brushed for each (y0, y1, x0, x1)."""
    mask = np.zeros((size, size), bool)
    for y0, y1, x0, x1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def two_torch_threads() -> Iterator[int]:
    """Torch on two threads for the test (under pytest-xdist a test process may have only one), so that
    painting on one thread and giving the other back can be seen."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(previous)


def test_removing_the_tree_unit_inside_the_brush_removes_the_tree_there_only() -> None:
    generator = hand_generator()
    painter = Painter(generator, "units")
    index = samples(generator, tree=True)[0]
    plain = painter.paint(SEED, index)
    assert tree_pixels(plain)[:8, :8].all() and not tree_pixels(plain)[8:, :].any()

    mask = brush((0, 8, 0, 4))  # the left half of the tree: two cells, two strokes' worth
    edited = painter.paint(SEED, index, [BrushEdit((TREE_CHANNEL,), "remove", mask)])
    trees = tree_pixels(edited)
    assert not trees[mask].any()  # removed where brushed
    assert trees[:8, 4:8].all()  # the other half stays
    assert np.array_equal(edited[~mask], plain[~mask])  # not one pixel outside the brush changes

    other = painter.paint(SEED, index, [BrushEdit((TREE_CHANNEL - 1,), "remove", brush((8, 16, 0, 16)))])
    assert np.array_equal(tree_pixels(other), tree_pixels(plain))  # another unit draws no tree


def test_adding_the_tree_unit_draws_the_tree_where_brushed(two_torch_threads: int) -> None:
    generator = hand_generator()
    painter = Painter(generator, "units", threads=1)
    index = samples(generator, tree=False)[0]
    plain = painter.paint(SEED, index)
    assert not tree_pixels(plain).any()

    strokes = brush((8, 12, 8, 16), (12, 16, 12, 16))  # two strokes in the bottom-right quarter
    edited = painter.paint(SEED, index, [BrushEdit((TREE_CHANNEL,), "add", strokes, (2.0,))])
    assert np.array_equal(tree_pixels(edited), strokes)
    assert np.array_equal(edited[~strokes], plain[~strokes])

    undone = painter.paint(
        SEED,
        index,
        [
            BrushEdit((TREE_CHANNEL,), "add", strokes, (2.0,)),
            BrushEdit((TREE_CHANNEL,), "remove", brush((12, 16, 12, 16))),
        ],
    )
    assert np.array_equal(tree_pixels(undone), brush((8, 12, 8, 16)))  # edits apply in order
    assert torch.get_num_threads() == two_torch_threads  # painting on one thread gives the others back after


def test_no_edit_gives_the_dissections_sample_exactly(tmp_path: Path) -> None:
    generator, segmenter = hand_generator(), red_segmenter()
    stored = generated_samples(tmp_path, 12, segmenter, (16, 16))
    generate_samples(generator, segmenter, stored, seed=SEED, layers=["units"], cache_dir=tmp_path / "cache")
    painter = Painter(generator, "units")
    for index in (0, 7, 11, 3):
        image = painter.paint(SEED, index)
        assert image.dtype == np.uint8 and np.array_equal(image, stored.load_image(index))


def test_the_brush_reaches_the_grid_by_area() -> None:
    rng = np.random.default_rng(5)
    for height, width, rows, cols in ((16, 16, 4, 4), (64, 64, 32, 32), (20, 30, 5, 6)):
        mask = rng.random((height, width)) < 0.5
        cells = layer_cells(mask, (rows, cols)).numpy()
        dy, dx = height // rows, width // cols
        reference = np.array(
            [
                [mask[r * dy : (r + 1) * dy, c * dx : (c + 1) * dx].mean() >= 0.5 for c in range(cols)]
                for r in range(rows)
            ]
        )
        assert np.array_equal(cells, reference)


class Nested(nn.Module):
    """The hand-built generator behind a forward that is not its children in order (a doubled output)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = HandGenerator()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z) * 0.5


@pytest.mark.parametrize(
    ("model", "layer", "resumes"),
    [
        (ToyGenerator(width=8, size=16), "layer2", True),
        (ToyGenerator(width=8, size=16), "layer2.0", False),
        (Nested(), "inner.units", False),
    ],
    ids=["toy top-level layer", "toy inner layer", "not its children in order"],
)
def test_an_edit_gives_what_a_hook_over_the_whole_generator_gives(
    model: nn.Module, layer: str, resumes: bool
) -> None:
    torch.manual_seed(0)
    for parameter in model.parameters():
        nn.init.normal_(parameter, std=0.3)
    generator = Generator(
        model, latent_shape=(11,) if isinstance(model, ToyGenerator) else (2,), where="g", device="cpu"
    )
    painter = Painter(generator, layer)
    size = painter.image_size(SEED)
    assert (painter._tail is not None) == resumes
    mask = np.zeros(size, bool)
    mask[: size[0] // 2, size[1] // 4 :] = True
    channels = (0, 2)

    def reference(acts: torch.Tensor) -> torch.Tensor:
        """Channel 0 removed and channel 2 set to 3.0 in the brushed cells, one cell at a time."""
        out = acts.clone()
        rows, cols = out.shape[2:]
        dy, dx = size[0] // rows, size[1] // cols
        for r in range(rows):
            for c in range(cols):
                if mask[r * dy : (r + 1) * dy, c * dx : (c + 1) * dx].mean() >= 0.5:
                    out[:, 0, r, c] = 0.0
                    out[:, 2, r, c] = 3.0
        return out

    for index in (4, 1):
        edits = [BrushEdit(channels[:1], "remove", mask), BrushEdit(channels[1:], "add", mask, (3.0,))]
        pixels, _ = generator.run(generator.latents(SEED, [index]), edits={layer: reference})
        expected = (pixels[0] * 255.0).round().byte().permute(1, 2, 0).numpy()
        assert np.abs(painter.paint(SEED, index, edits).astype(int) - expected).max() <= 1


def test_bad_edits_are_refused_by_name() -> None:
    painter = Painter(hand_generator(), "units")
    ok = brush((0, 8, 0, 8))
    cases = [
        (
            BrushEdit((TREE_CHANNEL,), "remove", np.ones((8, 8), bool)),
            r"edit 1: the brush is 8 x 8 px; the images are 16 x 16 px",
        ),
        (BrushEdit((4,), "remove", ok), r"edit 1: layer 'units' has units 1\.\.4; no unit 5 \(channel 4\)"),
        (BrushEdit((), "remove", ok), r"edit 1: name at least one unit"),
        (BrushEdit((TREE_CHANNEL,), "add", ok), r"edit 1: 'add' needs one value per unit \(1\), not 0"),
        (BrushEdit((TREE_CHANNEL,), "add", ok, (float("nan"),)), r"edit 1: the values to add must be finite"),
        (BrushEdit((TREE_CHANNEL,), "paint", ok), r"edit 1: action 'paint' is not one of add, remove"),  # type: ignore[arg-type]
    ]
    for edit, message in cases:
        with pytest.raises(DissectionError, match=message):
            painter.paint(SEED, 0, [edit])
    with pytest.raises(DissectionError, match=r"edit 2: "):
        painter.paint(SEED, 0, [BrushEdit((TREE_CHANNEL,), "remove", ok), BrushEdit((9,), "remove", ok)])
    with pytest.raises(DissectionError, match=r"generator hand\.pt has no layer 'trunk'"):
        Painter(hand_generator(), "trunk")
