"""A Celery worker thread inside this process, for the embedded default (`CELERY_BROKER_URL` unset, so the
broker is Celery's in-memory transport). It consumes both queues and runs the very tasks real workers run.

Caveats: the memory broker lives in this one process, so a task queued by another process (a second
`manage.py`, another web worker) is never seen here and queued work is lost on restart; the thread shares the
process's CPU (and GIL) with the web server. Set CELERY_BROKER_URL=redis://... for real workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from django.conf import settings

QUEUES = ["celery", "gpu"]


def needs_in_process_worker() -> bool:
    """True when tasks go to the in-memory broker, which only a worker in this process can consume."""
    from workers.app import app

    return str(app.conf.broker_url or settings.CELERY_BROKER_URL).startswith("memory://")


_running: list[object] = []


@contextmanager
def in_process_worker() -> Iterator[object]:
    """Run a solo worker thread on both queues for the duration of the block (or reuse the one running)."""
    from celery.contrib.testing.worker import start_worker

    from workers.app import app

    if _running:
        yield _running[-1]
        return
    # The console shows the run's progress bar, not every task and the memory transport's default host.
    logging.getLogger("celery").setLevel(logging.WARNING)
    logging.getLogger("kombu").setLevel(logging.ERROR)
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        queues=QUEUES,
        loglevel="WARNING",
        shutdown_timeout=60,
    ) as worker:
        _running.append(worker)
        try:
            yield worker
        finally:
            _running.remove(worker)


def start_in_process_worker() -> AbstractContextManager[object]:
    """Start the worker thread now and leave it running (the caller may `__exit__` it to stop)."""
    manager = in_process_worker()
    manager.__enter__()
    return manager
