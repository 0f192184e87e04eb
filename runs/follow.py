"""Follow a run's progress from its database row with a tqdm bar (for management commands)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from tqdm import tqdm

from runs.models import DissectionRun

POLL_S = 0.5


class Writer(Protocol):
    """Where the bar goes: a text stream, or a management command's stdout/stderr."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


def follow_run(
    run: DissectionRun, *, stream: Writer | None = None, timeout: float | None = None
) -> DissectionRun:
    """Show the run's % (and shards) until it is done, failed or cancelled; returns the final row."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with tqdm(
        total=100,
        desc=run.name,
        unit="%",
        file=stream,
        bar_format=("{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"),
    ) as bar:
        while True:
            run.refresh_from_db()
            bar.n = int(run.progress * 100)
            bar.set_postfix_str(
                f"{run.get_status_display().lower()}, {run.shards_done}/{run.shards_total} shards",
                refresh=False,
            )
            bar.refresh()
            if run.status not in (DissectionRun.Status.QUEUED, DissectionRun.Status.RUNNING):
                return run
            if deadline is not None and time.monotonic() > deadline:
                return run
            time.sleep(POLL_S)
