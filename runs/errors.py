"""Errors a requester sees when registering, launching or importing; each message names the field or file."""

from __future__ import annotations


class RunError(Exception):
    """A network, probe set or run that cannot be registered or launched (the message names the field)."""

    status: int = 400


class ImportUnitsError(RunError):
    """A unit folder or file that cannot be imported; the message names it."""


class RunStopped(Exception):
    """Raised inside a shard when its run was cancelled or failed meanwhile: the worker drops the shard."""
