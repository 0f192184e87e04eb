"""Files between Django's storage (local disk or S3) and a worker's local disk, and the keys a run's files
live under.

Shard results live in the default storage under deterministic keys, so a repeated shard rewrites the same
files; networks and S3 probe sets are copied once into WORK_DIR, because torch and the probe-set reader need
local paths.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, default_storage
from django.db.models.fields.files import FieldFile

from dissection.errors import ProbeSetError
from runs.models import ProbeSet


def shard_key(run_id: int, layer: str, phase: str, index: int) -> str:
    return f"runs/{run_id}/{layer}/{phase}/shard-{index}.npz"


def merged_key(run_id: int, layer: str, phase: str) -> str:
    """Where the merge of `phase` ("scan" or "tally") of one layer lies."""
    return f"runs/{run_id}/{layer}/{phase}/merged.npz"


def thresholds_key(run_id: int, layer: str) -> str:
    return f"runs/{run_id}/{layer}/scan/thresholds.npy"


def report_prefix(run_id: int, layer: str) -> str:
    return f"runs/{run_id}/{layer}/report"


def store_bytes(key: str, data: bytes) -> str:
    """Write `data` at `key`, replacing what an earlier delivery wrote there; returns the stored name."""
    return _replace(key, ContentFile(data))


def store_file(key: str, path: Path) -> str:
    with Path(path).open("rb") as handle:
        return _replace(key, File(handle))


def _replace(key: str, content: File) -> str:
    """Put `content` at exactly `key` in one step: a reader, or a worker killed mid-write, sees the old file
    or the new one, never none (a redelivered shard rewrites what the first delivery wrote)."""
    storage = default_storage
    if isinstance(storage, FileSystemStorage):
        target = Path(storage.path(key))
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in content.chunks():
                    out.write(chunk)
            if storage.file_permissions_mode is not None:
                os.chmod(temporary, storage.file_permissions_mode)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return key
    return cast(Any, storage)._save(key, content)  # an object store replaces a key with one put


def fetch(key: str, path: Path) -> Path:
    """Copy the stored `key` to the local `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with default_storage.open(key, "rb") as source, path.open("wb") as target:
        shutil.copyfileobj(source, target)
    return path


def store_tree(prefix: str, folder: Path) -> list[str]:
    """Upload every file under `folder` to `prefix/<relative path>`; returns the stored names."""
    return [
        store_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


def local_copy(field: FieldFile) -> Path:
    """A local path of a stored file: the file itself on local storage, else a cached copy in WORK_DIR."""
    try:
        return Path(field.path)
    except NotImplementedError:
        pass
    name = str(field.name)
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    target = Path(settings.WORK_DIR) / "files" / digest / Path(name).name
    if not target.is_file():
        partial = target.with_name(target.name + ".partial")
        fetch(name, partial)
        partial.replace(target)
    return target


def probe_set_root(probe_set: ProbeSet) -> Path:
    """The probe set's local folder; an s3://bucket/prefix is downloaded once into WORK_DIR.

    Every key must name a file inside the prefix: a key that would land outside the download folder (an
    absolute path, `..`, an empty segment) is refused with its name, and so is a prefix larger than
    PROBE_SET_MAX_BYTES, before anything is downloaded."""
    if not probe_set.path.startswith("s3://"):
        return Path(probe_set.path)
    import boto3

    bucket, _, prefix = probe_set.path.removeprefix("s3://").partition("/")
    digest = hashlib.sha256(probe_set.path.encode()).hexdigest()[:16]
    root = Path(settings.WORK_DIR) / "probe_sets" / digest
    if (root / ".complete").is_file():
        return root
    options = cast(dict[str, Any], settings.STORAGES["default"]).get("OPTIONS", {})
    endpoint = options.get("endpoint_url") or os.environ.get("S3_ENDPOINT_URL")
    client = boto3.client("s3", endpoint_url=endpoint or None)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    items = [
        item
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]
    total = sum(int(item.get("Size", 0)) for item in items)
    if total > settings.PROBE_SET_MAX_BYTES:
        raise ProbeSetError(
            f"{probe_set.path}: {total} bytes, more than PROBE_SET_MAX_BYTES={settings.PROBE_SET_MAX_BYTES}"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root.parent))
    try:
        for item in items:
            target = inside(partial, item["Key"][len(prefix) :], what=f"s3://{bucket}/{item['Key']}")
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(target))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / ".complete").touch()
    shutil.rmtree(root, ignore_errors=True)
    partial.replace(root)
    return root


def inside(root: Path, relative: str, *, what: str) -> Path:
    """`root / relative`, refused (naming `what`) unless it is a plain relative path that stays in `root`."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ProbeSetError(f"{what}: not a plain relative path inside the probe set")
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ProbeSetError(f"{what}: resolves outside the probe set")
    return target
