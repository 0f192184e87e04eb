"""The Celery app (`celery -A workers worker`) and the in-process worker thread of the embedded default."""

from workers.app import app

__all__ = ["app"]
