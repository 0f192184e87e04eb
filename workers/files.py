"""Files between Django's storage (local disk or S3) and a worker's local disk.

Shard results live in the default storage under deterministic keys; networks and S3 probe sets are copied
once into WORK_DIR, because torch and the probe-set reader need local paths.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db.models.fields.files import FieldFile

from annotate.models import ProbeSet


def store_bytes(key: str, data: bytes) -> str:
    """Write `data` at `key`, replacing what an earlier delivery wrote there; returns the stored name."""
    if default_storage.exists(key):
        default_storage.delete(key)
    return default_storage.save(key, ContentFile(data))


def store_file(key: str, path: Path) -> str:
    if default_storage.exists(key):
        default_storage.delete(key)
    with Path(path).open("rb") as handle:
        return default_storage.save(key, File(handle))


def fetch(key: str, path: Path) -> Path:
    """Copy the stored `key` to the local `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with default_storage.open(key, "rb") as source, path.open("wb") as target:
        shutil.copyfileobj(source, target)
    return path


def store_tree(prefix: str, folder: Path) -> list[str]:
    """Upload every file under `folder` to `prefix/<relative path>`; returns the stored names."""
    return [store_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path)
            for path in sorted(folder.rglob("*")) if path.is_file()]


def local_copy(field: FieldFile) -> Path:
    """A local path of a stored file: the file itself on local storage, else a cached copy in WORK_DIR."""
    try:
        return Path(field.path)
    except NotImplementedError:
        pass
    digest = hashlib.sha256(field.name.encode()).hexdigest()[:16]
    target = Path(settings.WORK_DIR) / "files" / digest / Path(field.name).name
    if not target.is_file():
        partial = target.with_name(target.name + ".partial")
        fetch(field.name, partial)
        partial.replace(target)
    return target


def probe_set_root(probe_set: ProbeSet) -> Path:
    """The probe set's local folder; an s3://bucket/prefix is downloaded once into WORK_DIR."""
    if not probe_set.path.startswith("s3://"):
        return Path(probe_set.path)
    import boto3

    bucket, _, prefix = probe_set.path.removeprefix("s3://").partition("/")
    digest = hashlib.sha256(probe_set.path.encode()).hexdigest()[:16]
    root = Path(settings.WORK_DIR) / "probe_sets" / digest
    if (root / ".complete").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root.parent))
    endpoint = settings.STORAGES["default"].get("OPTIONS", {}).get("endpoint_url") or os.environ.get(
        "S3_ENDPOINT_URL") or None
    client = boto3.client("s3", endpoint_url=endpoint)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            target = partial / item["Key"][len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(target))
    (partial / ".complete").touch()
    shutil.rmtree(root, ignore_errors=True)
    partial.replace(root)
    return root
