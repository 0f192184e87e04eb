"""Crowd providers behind one interface: `get_provider(name)` returns the implementation for a batch."""
from __future__ import annotations

from annotate.providers.base import CrowdProvider, ProviderError, SyncResult
from annotate.providers.local import LocalProvider
from annotate.providers.mturk import MTurkProvider
from annotate.providers.prolific import ProlificProvider

_PROVIDERS: dict[str, type[CrowdProvider]] = {
    LocalProvider.name: LocalProvider,
    ProlificProvider.name: ProlificProvider,
    MTurkProvider.name: MTurkProvider,
}


def get_provider(name: str) -> CrowdProvider:
    """The provider called `name` (local, prolific, mturk); unknown names are a programming error."""
    try:
        return _PROVIDERS[name]()
    except KeyError:
        raise ProviderError(f"unknown crowd provider {name!r}; expected one of {sorted(_PROVIDERS)}") from None


__all__ = ["CrowdProvider", "ProviderError", "SyncResult", "get_provider"]
