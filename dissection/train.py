"""Train the toy CNN on a synthetic probe set: classify each image's main object (labels from boxes.csv).

Deterministic (fixed seed, single process, no data-loader workers) and CPU-only, so the demo, the tests and
CAM localization all see the same model. Inputs are preprocessed exactly as dissection does it
(RGB in [0, 1], ImageNet mean/std), so the units it learns are the units it dissects.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from dissection.errors import ProbeSetError
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.networks import ToyNet, toy_checkpoint

DEFAULT_EPOCHS = 30


def read_classes(probe_set: Path) -> tuple[list[str], dict[str, int]]:
    """Class names (classes.txt) and each image's main-object class (first boxes.csv row of the image)."""
    classes_file, boxes_file = probe_set / "classes.txt", probe_set / "boxes.csv"
    for path in (classes_file, boxes_file):
        if not path.is_file():
            raise ProbeSetError(f"{path} is missing; train-toy needs a probe set made by `synth`")
    classes = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    labels: dict[str, int] = {}
    with boxes_file.open(newline="") as handle:
        for row_number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                cls = int(row["class"])
            except (KeyError, TypeError, ValueError):
                raise ProbeSetError(
                    f"{boxes_file} row {row_number}: field 'class' is not an integer"
                ) from None
            if not 0 <= cls < len(classes):
                raise ProbeSetError(f"{boxes_file} row {row_number}: class {cls} is not in {classes_file}")
            labels.setdefault(row["image"], cls)
    return classes, labels


def load_images(probe_set: Path, names: list[str]) -> torch.Tensor:
    """The named images (paths under images/) as one normalized batch, preprocessed as `ModelActivations`
    does."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    arrays = []
    for name in names:
        path = probe_set / "images" / name
        try:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert("RGB")))
        except OSError as error:
            raise ProbeSetError(f"{path}: cannot be read as an image ({error})") from None
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    return (batch - mean) / std


def train_toy(
    probe_set: Path,
    out: Path,
    *,
    seed: int = 0,
    epochs: int | None = None,
    progress: bool = True,
    width: int = 32,
) -> Path:
    """Train `ToyNet` on `probe_set` and save `toy_checkpoint(model, classes)` to `out`; returns `out`.

    `epochs` defaults to DEFAULT_EPOCHS (about two minutes for 200 images of 96 px on one CPU core). The
    checkpoint is written to a temporary name and renamed, so `out` never holds half a file.
    """
    probe_set, out = Path(probe_set), Path(out)
    classes, labels = read_classes(probe_set)
    names = sorted(labels)
    x = load_images(probe_set, names)
    y = torch.tensor([labels[name] for name in names])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ToyNet(num_classes=len(classes), width=width)
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    batch_size = 32
    steps = epochs * ((len(names) + batch_size - 1) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=max(steps, 1))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    bar = tqdm(total=steps, desc="train-toy", unit="step", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(names), generator=generator)
        correct = 0
        for start in range(0, len(names), batch_size):
            idx = order[start : start + batch_size]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            logits = model(xb)
            loss = loss_fn(logits, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((logits.argmax(1) == y[idx]).sum())
            bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / len(names):.2f}")
    bar.close()
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(toy_checkpoint(model, classes), partial)
    partial.replace(out)
    return out
