"""A registered network as a torch module: loaded once per process, the same way for every caller."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from dissection.errors import ModelError
from runs.models import Network
from runs.storage import local_copy

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from dissection.convert.segment import Segmenter
    from dissection.gan.models import Generator

_loaded: dict[tuple[int, str], nn.Module] = {}


def network_model(network: Network) -> nn.Module:
    """The network in eval mode, loaded once per worker process (keyed by its id and file)."""
    from dissection.networks import load_model

    key = (network.pk, network.torchscript.name or network.weights.name or "")
    if key not in _loaded:
        stored = network.torchscript or network.weights
        local = local_copy(stored) if stored else None
        try:
            if network.torchscript:
                _loaded[key] = load_model(torchscript=local)
            else:
                _loaded[key] = load_model(network.architecture, weights=local)
        except ModelError as exc:
            raise ModelError(_for_the_page(str(exc), local, str(stored.name or ""))) from None
    return _loaded[key]


# What the command line advises for a whole pickled model, and what a requester can do on the page instead.
_PICKLE_ADVICE = "if it is a whole pickled model you trust, pass --trust-pickle"
_PAGE_ADVICE = (
    "the service does not unpickle whole models: save the weights with "
    "torch.save(model.state_dict(), 'weights.pt'), or the model as TorchScript, and register that file"
)


def _for_the_page(message: str, local: Path | None, stored_name: str) -> str:
    """An engine error as a requester can act on it: the uploaded file's name instead of the worker's local
    path, and advice for the register form instead of a command-line flag."""
    if local is not None:
        message = message.replace(str(local), PurePosixPath(stored_name).name or "the uploaded file")
    return message.replace(_PICKLE_ADVICE, _PAGE_ADVICE)


def network_layers(network: Network) -> list[str]:
    """The names of the network's layers, as `--layer` and the run form accept them (a generator's after one
    sample is drawn, which refuses an output that is not N x 3 x H x W)."""
    from dissection.hooks import layer_names

    if network.kind == Network.Kind.GENERATOR:
        generator = network_generator(network)
        generator.run(generator.latents(0, [0]))
        return generator.layer_names()
    return layer_names(network_model(network))


def network_token_layers(network: Network) -> dict[str, str]:
    """A classifier's layers that output tokens, with the rule that reads each as maps (at 224 px), for the
    run form; none when the model cannot run on a blank 224 px image (its layers still dissect)."""
    from dissection.hooks import token_layers

    if network.kind != Network.Kind.CLASSIFIER:
        return {}
    try:
        return token_layers(network_model(network))
    except Exception:  # a model that needs another input size or shape: its rules are found when it runs
        return {}


CHECK_SIZE = 64
"""The side of the blank image a segmenter is tried on when registered (its class count is checked)."""


def segmenter_concepts(network: Network) -> list[dict[str, str]]:
    """The segmenter's concepts (registered, or its toy checkpoint's), after checking on a blank image that
    it outputs one class per concept."""
    import torch

    segmenter = network_segmenter(network, mask_size=(CHECK_SIZE, CHECK_SIZE))
    try:
        segmenter.logits(torch.zeros(1, 3, CHECK_SIZE, CHECK_SIZE))
    except ModelError as exc:
        raise ModelError(str(exc).replace("the classes file lists", "its concepts list")) from None
    return [{"name": c.name, "category": c.category or ""} for c in segmenter.classes]


_generators: dict[tuple[int, str, str], Generator] = {}


GENERATOR_ARCHITECTURES = ("toy-generator",)
SEGMENTER_ARCHITECTURES = ("toy-segmenter",)


def network_generator(network: Network, *, device: str = "cpu") -> Generator:
    """A generator network ready to sample (latents from (seed, index)) on `device` ("auto": the GPU if there
    is one), loaded once per process: a TorchScript file with its registered latent shape, or toy-generator
    weights (a `train-toy-generator` checkpoint, or a bare state dict of the default `ToyGenerator`)."""
    from dissection.gan.models import Generator, load_generator
    from dissection.gan.toys import LATENT_DIM

    stored = network.torchscript or network.weights
    key = (network.pk, stored.name or "", device)
    if key not in _generators:
        if not stored:
            raise ModelError(f"generator {network.name} has no file")
        if not network.torchscript and network.architecture not in GENERATOR_ARCHITECTURES:
            raise ModelError(
                f"generator {network.name}: architecture {network.architecture!r} is not a generator "
                f"architecture ({', '.join(GENERATOR_ARCHITECTURES)}); register a TorchScript file instead"
            )
        local = local_copy(stored)
        try:
            bare = None if network.torchscript else _bare_toy_generator(local)
            if bare is not None:
                shape = list(network.latent_shape) or [LATENT_DIM]
                loaded = Generator(bare, latent_shape=shape, where=network.name, device=device)
            else:
                loaded = load_generator(local, latent_shape=list(network.latent_shape) or None, device=device)
        except ModelError as exc:
            message = _for_the_page(str(exc), local, stored.name or "")
            raise ModelError(f"generator {network.name}: {message}") from None
        loaded.where = network.name
        _generators[key] = loaded
    return _generators[key]


def _bare_toy_generator(path: Path) -> nn.Module | None:
    """The default `ToyGenerator` with the state dict at `path`, or None when the file is a full checkpoint
    (or not a state dict: `load_generator` says what is wrong with it)."""
    import torch

    from dissection.gan.toys import ToyGenerator

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a foreign file
        return None
    if not isinstance(state, dict) or "arch" in state:
        return None
    if not all(isinstance(value, torch.Tensor) for value in state.values()):
        return None
    model = ToyGenerator()
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0][:300]
        raise ModelError(f"{path}: its weights do not fit a default toy-generator ({first})") from None
    return model


def generator_images(network: Network, seed: int, indices: Sequence[int]) -> np.ndarray:
    """Samples `indices` of the generator drawn from `seed`, as N x H x W x 3 uint8 RGB (what a generator
    run's probe set holds for them)."""
    generator = network_generator(network)
    pixels, _ = generator.run(generator.latents(seed, list(indices)))
    out: np.ndarray = (pixels * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return out


def generator_load(network: Network) -> nn.Module:
    """The generator network's module in eval mode on the CPU (latent batch in, N x 3 x H x W images out)."""
    return network_generator(network).model


def network_segmenter(
    network: Network, *, mask_size: tuple[int, int], thresholds: Sequence[float] = (0.0,), device: str = "cpu"
) -> Segmenter:
    """A segmenter network with its registered concepts as its output classes, on the CPU: a TorchScript
    file (ImageNet normalization) or a toy segmenter checkpoint (its own normalization)."""
    import torch

    from dissection.convert.segment import Segmenter, SegmenterClass
    from dissection.gan.models import load_segmenter
    from dissection.imagenet import IMAGENET_MEAN, IMAGENET_STD

    stored = network.torchscript or network.weights
    if not stored:
        raise ModelError(f"segmenter {network.name} has no file")
    if not network.torchscript and network.architecture not in SEGMENTER_ARCHITECTURES:
        raise ModelError(
            f"segmenter {network.name}: architecture {network.architecture!r} is not a segmenter "
            f"architecture ({', '.join(SEGMENTER_ARCHITECTURES)}); register a TorchScript file instead"
        )
    local = local_copy(stored)
    classes = [SegmenterClass(c["name"], c.get("category") or None) for c in network.concepts]
    model: nn.Module
    mean: Sequence[float]
    std: Sequence[float]
    try:
        if network.torchscript:
            try:
                model = torch.jit.load(str(local), map_location="cpu")
            except Exception as error:  # TorchScript's loader raises many types for a damaged file
                kind = type(error).__name__
                raise ModelError(f"{local}: cannot load this TorchScript segmenter ({kind})") from None
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            toy = load_segmenter(local, mask_size=mask_size, device="cpu")
            model, mean, std = toy.model, toy.mean.flatten().tolist(), toy.std.flatten().tolist()
            classes = classes or toy.classes
    except ModelError as exc:
        raise ModelError(
            f"segmenter {network.name}: {_for_the_page(str(exc), local, stored.name or '')}"
        ) from None
    return Segmenter(
        model,
        classes,
        mask_size=mask_size,
        thresholds=thresholds,
        mean=mean,
        std=std,
        device=device,
        where=f"segmenter {network.name}",
    )
