"""Building networks to dissect: the toy CNN, torchvision architectures with local weights, TorchScript.

Nothing is downloaded unless the user names a torchvision weights enum (e.g. `ResNet18_Weights.IMAGENET1K_V1`)
and has network; local weights may be a state_dict, a checkpoint dict holding `state_dict` (DataParallel's
`module.` prefixes are stripped, as in the Places365 checkpoints), or a whole pickled model with
`trust_pickle=True` only, since unpickling runs arbitrary code.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from dissection.errors import ModelError


class ToyNet(nn.Module):
    """A small CNN with a global-average-pooling + linear head, trainable on the CPU in minutes.

    Layers to dissect: `conv1` (full resolution) … `conv3` and `conv4` (1/4 resolution; conv4 is the CAM
    feature map). Like the CAM paper's networks it has no pooling after conv3: at 1/8 the map of a 64 px image
    is 8 x 8, too coarse for CAM boxes to find objects of 15-40 px.
    """

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
            )

        self.conv1 = block(3, width)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = block(width, 2 * width)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = block(2 * width, 4 * width)
        self.conv4 = block(4 * width, 4 * width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.conv4(self.conv3(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ToyViT(nn.Module):
    """A tiny vision transformer (a class token and `depth` encoder blocks over 8 px patches, no position
    embedding, so any image size whose sides are multiples of 8 works): a token model that dissects in
    seconds on the CPU. Layers to dissect: `blocks.<i>`, N x (1 + H·W) x width tokens (rule `cls`)."""

    def __init__(self, num_classes: int = 10, width: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, 8, stride=8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.Sequential(
            *(
                nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
                for _ in range(depth)
            )
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = self.blocks(torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1))
        return self.head(self.norm(tokens[:, 0]))


def toy_checkpoint(model: ToyNet, classes: list[str]) -> dict[str, Any]:
    """What `train-toy` saves: enough to rebuild the model and name its classes."""
    return {
        "arch": "toy",
        "num_classes": model.fc.out_features,
        "width": model.conv1[0].out_channels,
        "classes": list(classes),
        "state_dict": model.state_dict(),
    }


def strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Drop DataParallel's `module.` prefix from every key that has it."""
    return OrderedDict((k.removeprefix("module."), v) for k, v in state_dict.items())


def _read_weights(path: Path, trust_pickle: bool) -> Any:
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # retried below only when the user allows it
        if not trust_pickle:
            raise ModelError(
                f"{path}: cannot be read as a state_dict or checkpoint ({type(safe_error).__name__}: "
                f"{str(safe_error).splitlines()[0][:200]}); if it is a whole pickled model you trust, "
                "pass --trust-pickle"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling can raise anything
        raise ModelError(f"{path}: cannot be loaded ({type(error).__name__}: {error})") from None


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: holds neither a state_dict nor a checkpoint dict with 'state_dict'")
    return strip_module_prefix(obj)


def _classifier_size(state_dict: dict[str, torch.Tensor]) -> int | None:
    """The output size of the last 2-D weight: the classifier of every torchvision architecture."""
    last = None
    for key, value in state_dict.items():
        if key.endswith("weight") and value.dim() == 2:
            last = value
    return None if last is None else int(last.shape[0])


def _more(keys: list[str], shown: int) -> str:
    """How many keys a message leaves out."""
    return f" (+{len(keys) - shown})" if len(keys) > shown else ""


def _load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}" + _more(missing, 5))
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}" + _more(unexpected, 5))
        if mismatched:
            parts.append(f"shape mismatch {mismatched[:5]}")
        raise ModelError(f"{path}: weights do not fit the architecture: " + "; ".join(parts))
    model.load_state_dict(state_dict)


def load_model(
    arch: str | None = None,
    *,
    weights: str | Path | None = None,
    torchscript: str | Path | None = None,
    trust_pickle: bool = False,
) -> nn.Module:
    """Build a model in eval mode on the CPU.

    `arch` is `toy`, `toy-vit` or a torchvision architecture name; `weights` a local file or a torchvision
    weights enum name such as `ResNet18_Weights.IMAGENET1K_V1` (the only path that may download).
    """
    if torchscript is not None:
        path = Path(torchscript)
        if not path.is_file():
            raise ModelError(f"TorchScript file {path} does not exist")
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as error:  # TorchScript's loader raises many types for a foreign file
            raise ModelError(f"{path}: not a TorchScript file ({type(error).__name__})") from None
    if not arch:
        raise ModelError(
            "name a model: --model ARCH (toy or a torchvision architecture) or --torchscript FILE"
        )

    if arch == "toy":
        if weights is None:
            return ToyNet().eval()
        path = Path(weights)
        raw = _read_weights(path, trust_pickle)
        if isinstance(raw, nn.Module):
            return raw.eval()
        state_dict = _state_dict_of(raw, path)
        num_classes = raw.get("num_classes") if isinstance(raw, dict) else None
        width = raw.get("width", 32) if isinstance(raw, dict) else 32
        model = ToyNet(num_classes=int(num_classes or _classifier_size(state_dict) or 10), width=int(width))
        _load_into(model, state_dict, path)
        return model.eval()

    if arch == "toy-vit":
        vit = ToyViT()
        if weights is not None:
            path = Path(weights)
            _load_into(vit, _state_dict_of(_read_weights(path, False), path), path)
        return vit.eval()

    available = set(torchvision.models.list_models(module=torchvision.models))
    if arch not in available:
        raise ModelError(
            f"unknown architecture {arch!r}; use 'toy' or one of: {', '.join(sorted(available))}"
        )

    if weights is not None and "_Weights." in str(weights) and not Path(weights).exists():
        try:
            enum = torchvision.models.get_weight(str(weights))
        except (ValueError, KeyError):
            raise ModelError(f"unknown torchvision weights {weights!r}") from None
        return torchvision.models.get_model(arch, weights=enum).eval()

    extra: dict[str, Any] = {}
    if arch in {"googlenet", "inception_v3"}:
        extra = {"aux_logits": False, "init_weights": False}
    if weights is None:
        return torchvision.models.get_model(arch, weights=None, **extra).eval()

    path = Path(weights)
    raw = _read_weights(path, trust_pickle)
    if isinstance(raw, nn.Module):
        return raw.eval()
    state_dict = _state_dict_of(raw, path)
    has_aux = any(k.startswith(("aux1.", "aux2.", "AuxLogits.")) for k in state_dict)
    if arch in {"googlenet", "inception_v3"} and has_aux:
        extra["aux_logits"] = True
    num_classes = _classifier_size(state_dict)
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes or 1000, **extra)
    _load_into(model, state_dict, path)
    return model.eval()


def checkpoint_classes(weights: str | Path | None) -> list[str] | None:
    """Class names stored in a toy checkpoint, if any."""
    if weights is None or not Path(weights).is_file():
        return None
    raw = torch.load(Path(weights), map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and isinstance(raw.get("classes"), list):
        return [str(c) for c in raw["classes"]]
    return None
