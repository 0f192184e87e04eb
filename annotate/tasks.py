"""Celery tasks of the crowd platform: thin wrappers that take ids and call a service.

`comparison_refresh` redoes a comparison's stored figures after its inputs changed
(`annotate.services.comparison`); it runs on the default queue, in the web process's worker thread under
`make run`.
"""

from __future__ import annotations

from runs.tasks import DatabaseRetrying
from workers.app import app


@app.task(name="annotate.tasks.comparison_refresh", base=DatabaseRetrying)
def comparison_refresh(summary_id: int) -> None:
    from annotate.services.comparison import comparison_summary_recompute

    comparison_summary_recompute(summary_id=summary_id)
