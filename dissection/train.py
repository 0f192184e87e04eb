"""Train the toy CNN on a synthetic probe set: classify each image's main object (labels from boxes.csv),
or, to fine-tune a trained copy, its scene (index.csv's scene column; floorless images are "none").

Deterministic (fixed seed, single process, no data-loader workers) and CPU-only, so the demo, the tests and
CAM localization all see the same model. Inputs are preprocessed exactly as dissection does it
(RGB in [0, 1], ImageNet mean/std), so the units it learns are the units it dissects. Checkpoints taken every
few epochs, and a fine-tuned copy, give the training series and the before/after pair that
`python -m dissection compare` reads.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from dissection.errors import ModelError, ProbeSetError
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.networks import ToyNet, toy_checkpoint

DEFAULT_EPOCHS = 30
TARGETS = ("object", "scene")
NO_SCENE = "none"


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


def read_scenes(probe_set: Path) -> tuple[list[str], dict[str, int]]:
    """Scene classes (the probe set's scene labels, then "none") and each image's scene (none without one)."""
    index_file, label_file = probe_set / "index.csv", probe_set / "label.csv"
    for path in (index_file, label_file):
        if not path.is_file():
            raise ProbeSetError(
                f"{path} is missing; train-toy --target scene needs a Broden-format probe set"
            )
    with label_file.open(newline="") as handle:
        scenes = {
            row["number"]: row["name"].removesuffix("-s")
            for row in csv.DictReader(handle)
            if (row.get("category") or "").partition("(")[0] == "scene"  # Broden writes "scene(29)"
        }
    classes = [*sorted(set(scenes.values())), NO_SCENE]
    labels: dict[str, int] = {}
    with index_file.open(newline="") as handle:
        for row_number, row in enumerate(csv.DictReader(handle), start=2):
            numbers = [n.strip() for n in (row.get("scene") or "").split(";") if n.strip()]
            unknown = [n for n in numbers if n not in scenes]
            if unknown:
                raise ProbeSetError(
                    f"{index_file} row {row_number}: scene {unknown[0]} is not in {label_file}"
                )
            labels[row["image"]] = classes.index(scenes[numbers[0]]) if numbers else len(classes) - 1
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
    target: str = "object",
    finetune: Path | None = None,
    save_every: int | None = None,
) -> Path:
    """Train `ToyNet` on `probe_set` and save `toy_checkpoint(model, classes)` to `out`; returns `out`.

    `epochs` defaults to DEFAULT_EPOCHS (about two minutes for 200 images of 96 px on one CPU core).
    `target` is what the network learns to name: the main object, or the scene. `finetune` starts from a
    trained toy checkpoint (all but its classifier, which is made anew for the target's classes).
    `save_every` N also keeps `<out stem>-epoch<NNN>.pt` every N epochs (with its epoch and optimizer step),
    a training series to dissect. Every file is written to a temporary name and renamed, so none is ever half
    written.
    """
    probe_set, out = Path(probe_set), Path(out)
    if target not in TARGETS:
        raise ProbeSetError(f"target {target!r} is not one of {', '.join(TARGETS)}")
    if save_every is not None and save_every < 1:
        raise ProbeSetError(f"--save-every must be at least 1 epoch, not {save_every}")
    classes, labels = read_classes(probe_set) if target == "object" else read_scenes(probe_set)
    names = sorted(labels)
    x = load_images(probe_set, names)
    y = torch.tensor([labels[name] for name in names])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ToyNet(num_classes=len(classes), width=width)
    if finetune is not None:
        _load_backbone(model, Path(finetune))
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    batch_size = 32
    steps = epochs * ((len(names) + batch_size - 1) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=max(steps, 1))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    bar = tqdm(total=steps, desc="train-toy", unit="step", disable=not progress)
    step = 0
    for epoch in range(1, epochs + 1):
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
            step += 1
            correct += int((logits.argmax(1) == y[idx]).sum())
            bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / len(names):.2f}")
        if save_every and epoch % save_every == 0 and epoch < epochs:
            model.eval()
            _save(model, classes, out.with_name(f"{out.stem}-epoch{epoch:03d}{out.suffix}"), epoch, step)
            model.train()
    bar.close()
    model.eval()
    return _save(model, classes, out, epochs, step)


def checkpoint_series(out: Path) -> list[Path]:
    """The checkpoints `train_toy(out, save_every=...)` kept, in training order, then `out` itself."""
    out = Path(out)
    return [*sorted(out.parent.glob(f"{out.stem}-epoch[0-9][0-9][0-9]{out.suffix}")), out]


def _save(model: ToyNet, classes: list[str], out: Path, epoch: int, step: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save({**toy_checkpoint(model, classes), "epoch": epoch, "step": step}, partial)
    partial.replace(out)
    return out


def _load_backbone(model: ToyNet, path: Path) -> None:
    """Copy every layer but the classifier from the toy checkpoint at `path` into `model`."""
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint to fine-tune")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint["state_dict"]
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise ModelError(f"{path}: not a toy checkpoint made by train-toy ({error})") from None
    backbone = {key: value for key, value in state.items() if not key.startswith("fc.")}
    try:
        missing = model.load_state_dict(backbone, strict=False).missing_keys
    except RuntimeError as error:
        raise ModelError(f"{path}: its layers do not fit a toy network of this width ({error})") from None
    if [key for key in missing if not key.startswith("fc.")]:
        raise ModelError(
            f"{path}: lacks the layers {', '.join(k for k in missing if not k.startswith('fc.'))}"
        )
