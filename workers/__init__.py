"""Celery workers: GPU jobs (dissection shards, CAM galleries) for the service; `celery -A workers worker`."""
from workers.app import app

__all__ = ["app"]
