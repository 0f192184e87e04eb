"""Pictures in, normalized batches out: CAM maps cover the whole image, so nothing is cropped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dissection.errors import DissectionError
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD


class ImageError(DissectionError):
    """An image file is missing or cannot be decoded."""


def load_image(path: str | Path) -> Image.Image:
    """The image as RGB, or an ImageError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageError(f"cannot read image {path}: {error}") from None


def preprocess(
    images: Sequence[Image.Image],
    size: int | None,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """RGB in [0, 1], normalized, as N x 3 x H x W.

    Each image is resized to size x size without cropping, so maps cover the whole image; with `size` None the
    images keep their own (common) size, as the toy model sees its probe set in training.
    """
    if size is None:
        sizes = {image.size for image in images}
        if len(sizes) != 1:
            raise ImageError(f"images of different sizes {sorted(sizes)} need a common input size (--size)")
    else:
        images = [image.resize((size, size), Image.Resampling.BILINEAR) for image in images]
    batch = torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32) for image in images]))
    batch = batch.permute(0, 3, 1, 2) / 255.0
    return (batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
