"""The demo images follow NetDissect's convention: outside the activated region at 20% brightness."""
from PIL import Image

from annotate.demo import highlight


def test_highlight_keeps_the_region_and_darkens_the_rest_to_20_percent() -> None:
    image = Image.new("RGB", (4, 2), (200, 100, 50))
    mask = Image.new("L", (4, 2), 0)
    mask.putpixel((1, 0), 255)
    out = highlight(image, mask)
    for x in range(4):
        for y in range(2):
            expected = (200, 100, 50) if (x, y) == (1, 0) else (40, 20, 10)
            assert out.getpixel((x, y)) == expected
