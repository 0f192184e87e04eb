"""Training the toy generator and toy segmenter (CPU, deterministic, a few minutes each on two cores).

The segmenter learns each pixel's object, else floor material, else nothing, from a synthetic probe set's
masks; its pixel accuracy and mean IoU on the held-out last fifth of the images are measured, printed and
kept in the checkpoint. The generator learns to render `synth`'s scenes from their parameters
(`dissection.gan.toys`); its L1 error on held-out scenes is kept the same way, with a grid of samples
beside the checkpoint (top: synth's picture, bottom: the generator's for the same latent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from dissection.broden import load_probe_set
from dissection.errors import ProbeSetError
from dissection.gan.toys import LATENT_DIM, SEGMENTER_CLASSES, ToyGenerator, ToySegmenter, scene_of_code
from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD
from dissection.synth import _render

GENERATOR_STEPS = 1200
SEGMENTER_EPOCHS = 30
HELD_OUT = 0.2
_BATCH = 32


def _save(checkpoint: dict[str, Any], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(out)
    return out


def _schedule(parameters: Any, steps: int, lr: float) -> tuple[torch.optim.Optimizer, Any]:
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-5)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1))


def segmenter_targets(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A synth probe set's images (N x 3 x H x W in [0, 1]) and per mask pixel the toy segmenter's class
    (N x sh x sw int64): the object there, else the floor material, else 0."""
    probe = load_probe_set(root)
    wanted = {(name, category): c for c, (name, category) in enumerate(SEGMENTER_CLASSES) if category}
    number_class = np.zeros(probe.num_labels, np.int64)
    found = set()
    for number, name in enumerate(probe.label_names):
        category = probe.categories[probe.label_category[number]] if probe.label_category[number] >= 0 else ""
        if (name, category) in wanted:
            number_class[number] = wanted[name, category]
            found.add(name)
    missing = [name for name, category in SEGMENTER_CLASSES if category and name not in found]
    if missing:
        raise ProbeSetError(
            f"{root / 'label.csv'} lacks the labels {', '.join(missing)}; train-toy-segmenter needs a probe "
            "set made by `synth`"
        )
    object_first = np.argsort([SEGMENTER_CLASSES[c][1] != "object" for c in range(len(SEGMENTER_CLASSES))])
    rank = np.empty_like(object_first)
    rank[object_first] = np.arange(object_first.size)
    images, targets = [], []
    for index in range(len(probe)):
        images.append(probe.load_image(index))
        numbers, onehot = probe.load_labels(index)
        target = np.zeros(onehot.shape[1], np.int64)
        classes = number_class[numbers]
        # objects over materials: write materials first, objects last
        for row in np.argsort(-rank[classes], kind="stable"):
            if classes[row]:
                target[onehot[row] > 0] = classes[row]
        targets.append(target.reshape(probe.mask_size))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return pixels, torch.from_numpy(np.stack(targets))


def segmentation_quality(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """Pixel accuracy, and IoU per class (classes absent from both: left out) and their mean."""
    accuracy = float((predicted == target).float().mean())
    per_class = {}
    for c, (name, _) in enumerate(SEGMENTER_CLASSES):
        union = int(((predicted == c) | (target == c)).sum())
        if union:
            per_class[name] = int(((predicted == c) & (target == c)).sum()) / union
    return {
        "pixel_accuracy": accuracy,
        "mean_iou": float(np.mean(list(per_class.values()))),
        "iou": per_class,
    }


def _logits(model: ToySegmenter, pixels: torch.Tensor, mask_size: tuple[int, int]) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    logits = model((pixels - mean) / std)
    return F.interpolate(logits, size=mask_size, mode="bilinear", align_corners=False)


def train_toy_segmenter(
    probe_set: Path,
    out: Path,
    *,
    seed: int = 0,
    epochs: int = SEGMENTER_EPOCHS,
    width: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `ToySegmenter` on the first four fifths of `probe_set`, measure it on the rest, save the
    checkpoint to `out`; returns the held-out quality."""
    probe_set, out = Path(probe_set), Path(out)
    pixels, targets = segmenter_targets(probe_set)
    held = max(1, round(len(pixels) * HELD_OUT))
    if len(pixels) - held < 1:
        raise ProbeSetError(f"{probe_set}: {len(pixels)} images are too few to train and hold out a fifth")
    train_x, train_y = pixels[:-held], targets[:-held]
    mask_size = (int(targets.shape[1]), int(targets.shape[2]))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ToySegmenter(width=width)
    steps = epochs * -(-len(train_x) // _BATCH)
    # Objects cover a few percent of the pixels: weigh classes by 1/sqrt(frequency) so they are learnt.
    frequency = torch.bincount(train_y.flatten(), minlength=len(SEGMENTER_CLASSES)).double() + 1.0
    weights = frequency.rsqrt()
    weights = (weights / (weights * frequency).sum() * frequency.sum()).float()
    optimizer, schedule = _schedule(model.parameters(), steps, 3e-3)
    model.train()
    with tqdm(total=steps, desc="train-toy-segmenter", unit="step", disable=not progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(train_x), generator=generator)
            for start in range(0, len(train_x), _BATCH):
                idx = order[start : start + _BATCH]
                xb, yb = train_x[idx], train_y[idx]
                flip = torch.rand(len(idx), generator=generator) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
                yb = torch.where(flip.view(-1, 1, 1), yb.flip(2), yb)
                loss = F.cross_entropy(_logits(model, xb, mask_size), yb, weight=weights)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [
                _logits(model, pixels[i : i + 64], mask_size).argmax(1)
                for i in range(len(pixels) - held, len(pixels), 64)
            ]
        )
    quality = {**segmentation_quality(predicted, targets[-held:]), "held_out_images": held}
    _save(
        {
            "arch": "toy-segmenter",
            "width": width,
            "classes": [list(c) for c in SEGMENTER_CLASSES],
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "quality": quality,
            "state_dict": model.state_dict(),
        },
        out,
    )
    return quality


def scene_batch(codes: torch.Tensor, size: int, seed: int, first: int) -> torch.Tensor:
    """synth's pictures (N x 3 x size x size in [-1, 1]) of the scenes the code rows describe; scene i's
    pixel noise comes from (seed, first + i)."""
    pictures = [
        _render(scene_of_code(code), size, np.random.default_rng([seed, first + i]))["rgb"]
        for i, code in enumerate(codes.numpy())
    ]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def train_toy_generator(
    out: Path,
    *,
    seed: int = 0,
    steps: int = GENERATOR_STEPS,
    scenes: int = 4000,
    size: int = 64,
    width: int = 24,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `ToyGenerator` to render `scenes` synth scenes (plus a held-out fifth as many), save the
    checkpoint to `out` and a sample grid to `<out stem>-samples.png`; returns the held-out L1 error
    (pixel values in [0, 255])."""
    out = Path(out)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ToyGenerator(width=width, size=size)
    held = max(8, scenes // 5)
    with torch.no_grad():
        codes = model.prior(torch.randn(scenes + held, LATENT_DIM, generator=generator))
    targets = scene_batch(codes, size, seed, 0)
    optimizer, schedule = _schedule(model.parameters(), steps, 3e-3)
    model.train()
    with tqdm(total=steps, desc="train-toy-generator", unit="step", disable=not progress) as bar:
        for _ in range(steps):
            idx = torch.randint(0, scenes, (_BATCH,), generator=generator)
            loss = (model.decode(codes[idx]) - targets[idx]).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        rendered = torch.cat([model.decode(codes[i : i + 64]) for i in range(scenes, scenes + held, 64)])
    error = float((rendered - targets[scenes:]).abs().mean() * 127.5)
    quality = {"held_out_l1": error, "held_out_scenes": held, "steps": steps, "objective": "L1 regression"}
    _save(
        {
            "arch": "toy-generator",
            "width": width,
            "size": size,
            "latent_shape": [LATENT_DIM],
            "output_range": [-1.0, 1.0],
            "quality": quality,
            "state_dict": model.state_dict(),
        },
        out,
    )
    columns = 8
    grid = torch.cat([targets[scenes : scenes + columns], rendered[:columns]])
    _image_grid(grid, 2, columns).save(out.with_name(f"{out.stem}-samples.png"))
    return quality


def _image_grid(images: torch.Tensor, rows: int, columns: int) -> Image.Image:
    """Images in [-1, 1] (rows * columns x 3 x H x W) as one picture, 2 px apart."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    h, w = pixels.shape[1:3]
    canvas = Image.new("RGB", (columns * (w + 2) - 2, rows * (h + 2) - 2), "white")
    for i, picture in enumerate(pixels):
        canvas.paste(Image.fromarray(picture), ((i % columns) * (w + 2), (i // columns) * (h + 2)))
    return canvas
