"""Crowd providers behind one interface: `get_provider(name)` returns the implementation for a batch.

One folder per provider holds its client, and its pages and templates where it has any (as healthchecks keeps
one folder per integration). A provider reports what it finds remotely; the services decide what to do.
"""

from __future__ import annotations

from annotate.providers.base import (
    CrowdProvider,
    ProviderError,
    RemoteAssignment,
    SyncResult,
)
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
        raise ProviderError(
            f"unknown crowd provider {name!r}; expected one of {sorted(_PROVIDERS)}"
        ) from None


__all__ = ["CrowdProvider", "ProviderError", "RemoteAssignment", "SyncResult", "get_provider"]
