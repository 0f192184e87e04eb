"""A registered network as a torch module: loaded once per process, the same way for every caller."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
        if network.torchscript:
            _loaded[key] = load_model(torchscript=local_copy(network.torchscript))
        else:
            weights = local_copy(network.weights) if network.weights else None
            _loaded[key] = load_model(network.architecture, weights=weights)
    return _loaded[key]


def network_layers(network: Network) -> list[str]:
    """The names of the network's layers, as `--layer` and the run form accept them."""
    from dissection.hooks import layer_names

    return layer_names(network_model(network))
