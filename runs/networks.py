"""A registered network as a torch module: loaded once per process, the same way for every caller."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from dissection.errors import ModelError
from runs.models import Network
from runs.storage import local_copy

if TYPE_CHECKING:
    from torch import nn

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
    """The names of the network's layers, as `--layer` and the run form accept them."""
    from dissection.hooks import layer_names

    return layer_names(network_model(network))
