"""Storage on S3 (django-storages) against moto's server mode: a run reads its probe set from an s3:// prefix
and writes shard results, tiles and reports to the bucket, all readable through their URLs."""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.core.files import File
from moto.server import ThreadedMotoServer
from PIL import Image

from runs import services as runs
from runs.models import DissectionRun, UnitImage
from runs.selectors import run_reports
from tests.factories import logged_in, shared_project, staff_user
from tests.runs.conftest import TOPK, drain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
BUCKET = "unitscope-media"
PROBE_SET = "probe-sets/synthetic"


@pytest.fixture(scope="module")
def s3_server(probe_set_dir: Path) -> Iterator[str]:
    """moto's S3 server for this module's tests, its bucket holding the session's probe set under PROBE_SET
    (uploaded once: one request per file is what takes the time)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            _upload_folder(endpoint, probe_set_dir, PROBE_SET)
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def s3(s3_server: str, settings: Any, tmp_path: Path) -> Iterator[str]:
    """Django's default storage on the bucket; at the end the bucket holds the probe set alone again."""
    client = boto3.client("s3", endpoint_url=s3_server)
    probe_set = set(_keys(client))
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_server,
                "region_name": "us-east-1",
                "location": "media",
                "querystring_auth": True,
                "file_overwrite": False,
            },
        },
    }
    settings.WORK_DIR = tmp_path / "work"
    yield s3_server
    added = [{"Key": key} for key in _keys(client) if key not in probe_set]
    if added:
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": added})


def _keys(client: Any) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _upload_folder(endpoint: str, folder: Path, prefix: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_a_rewritten_key_on_s3_keeps_its_name(s3: str) -> None:
    """A redelivered shard puts its result at the same key (file_overwrite=False would rename an upload)."""
    from runs.storage import store_bytes

    key = "runs/9/conv3/tally/merged.npz"
    assert store_bytes(key, b"first") == key
    assert store_bytes(key, b"second") == key
    body = boto3.client("s3", endpoint_url=s3).get_object(Bucket=BUCKET, Key=f"media/{key}")["Body"].read()
    assert body == b"second"
    listed = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket=BUCKET, Prefix="media/runs/9/")
    assert [item["Key"] for item in listed["Contents"]] == [f"media/{key}"]


def test_run_on_s3_writes_tiles_readable_through_their_urls(
    s3: str, toy_weights: Path, django_user_model: Any
) -> None:
    """Tiles are linked with signed S3 URLs; the report and its strips come through the media view, which
    streams them from the bucket to the project's members."""
    project = shared_project()
    probe_set = runs.probe_set_register(
        project=project, name="synthetic on s3", path=f"s3://{BUCKET}/{PROBE_SET}", inspect_now=True
    )
    assert probe_set.image_count == 160
    with toy_weights.open("rb") as handle:
        network = runs.network_register(
            project=project,
            name="toy",
            architecture="toy",
            weights=File(handle, name="toy.pt"),
            inspect_now=True,
        )
    assert network.weights.url.startswith(s3)
    run = drain(
        runs.run_launch(
            project=project,
            name="s3 run",
            network=network,
            probe_set=probe_set,
            layers=["conv4"],
            shard_size=80,
            topk=TOPK,
        )
    )
    assert run.status == DissectionRun.Status.DONE, run.error
    images = UnitImage.objects.filter(unit__run=run)
    assert images.count() == 128 * TOPK
    assert not images.exclude(image="").exists()  # full-size tiles are made when wanted, not by the run
    first = run.units.order_by("channel").first()
    assert first is not None and first.strip.url.startswith(f"{s3}/{BUCKET}/media/runs/{run.pk}/conv4/")
    runs.unit_tiles_ensure(unit_ids=[first.pk])  # reads the probe images and the maps from the bucket
    for image in images.filter(unit=first).order_by("rank")[:3]:
        url = image.image.url
        assert url.startswith(f"{s3}/{BUCKET}/media/runs/{run.pk}/conv4/report/tiles/")
        with urllib.request.urlopen(url) as response:
            tile = Image.open(io.BytesIO(response.read()))
        assert tile.size == (64, 64)
    [(_, report_url)] = run_reports(run=run)
    assert report_url == f"/media/runs/{run.pk}/conv4/report/report.html"
    client = logged_in(staff_user(django_user_model))
    report = client.get(report_url)
    assert report.status_code == 200 and "script-src" not in report["Content-Security-Policy"]
    assert "default-src 'none'" in report["Content-Security-Policy"]
    html = b"".join(report.streaming_content).decode()
    strip = html.split('<img src="', 1)[1].split('"', 1)[0]
    assert "conv4" in html and strip.startswith("strips/")
    beside = client.get(report_url.rsplit("/", 1)[0] + "/" + strip)
    assert beside.status_code == 200 and beside["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(b"".join(beside.streaming_content))).size[0] > 0


@pytest.mark.parametrize("evil", ["/{victim}", "p/../../{name}", "./{name}"])
def test_a_bucket_key_outside_the_probe_set_is_refused_and_written_nowhere(
    s3: str, tmp_path: Path, evil: str
) -> None:
    """The audit's attack: whoever can write the bucket adds a key that joins onto an absolute path or climbs
    out of the download folder."""
    victim = tmp_path / "outside" / "owned.txt"
    key = f"{PROBE_SET}/" + evil.format(victim=victim, name="owned.txt")
    boto3.client("s3", endpoint_url=s3).put_object(Bucket=BUCKET, Key=key, Body=b"pwned")
    with pytest.raises(
        runs.RunError, match=r"s3://unitscope-media/probe-sets/synthetic/.*not a plain relative path"
    ):
        runs.probe_set_register(
            project=shared_project(), name="evil", path=f"s3://{BUCKET}/{PROBE_SET}", inspect_now=True
        )
    assert not victim.exists() and not list(tmp_path.rglob("owned.txt"))
    assert not (tmp_path / "work" / "probe_sets").exists() or not any(
        (tmp_path / "work" / "probe_sets").iterdir()
    )


def test_a_probe_set_over_the_size_cap_is_refused_before_downloading(
    s3: str, settings: Any, tmp_path: Path
) -> None:
    settings.PROBE_SET_MAX_BYTES = 1000
    with pytest.raises(
        runs.RunError, match=r"s3://unitscope-media/probe-sets/synthetic: \d+ bytes, more than"
    ):
        runs.probe_set_register(
            project=shared_project(), name="big", path=f"s3://{BUCKET}/{PROBE_SET}", inspect_now=True
        )
    assert not (tmp_path / "work" / "probe_sets").exists()
