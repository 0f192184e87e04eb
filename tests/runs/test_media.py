"""Media are private: the URLs a worker could read off a page (`/media/runs/<id>/<layer>/report/...`), a run's
report, result.json and tally.csv (the automatic labels and so the gold answers), and uploaded network weights
reach the members of the owning project only: anonymous clients and crowd workers are sent to the login page,
another project's requester gets 404, and report.html comes with a policy that runs no script."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client

from annotate import services
from runs.models import DissectionRun, Network, Project, UnitImage
from runs.selectors import run_reports
from tests.factories import logged_in, png_bytes, run_create, shared_project, staff_user, unit_create

REPORT = (
    b'<!doctype html><html><body><h1>conv4</h1><img src="strips/unit_0001.jpg" alt="strip"></body></html>'
)


@pytest.fixture
def run(db: None) -> DissectionRun:
    """A finished run whose layer conv4 has a report, its result and tally, a strip, and a unit with tiles."""
    run = run_create("private run", status=DissectionRun.Status.DONE, layers=["conv4"])
    prefix = f"runs/{run.pk}/conv4/report"
    for name, body in {
        "report.html": REPORT,
        "result.json": b'{"units": [{"label": "dog"}]}',
        "tally.csv": b"unit,category,label\n1,object,dog\n",
        "strips/unit_0001.jpg": png_bytes(),
        "tiles/unit_0001/00.jpg": png_bytes(),
    }.items():
        default_storage.save(f"{prefix}/{name}", ContentFile(body))
    run.report = {"conv4": f"{prefix}/report.html"}
    run.save(update_fields=["report"])
    unit = unit_create(run, 0, images=0, label="dog")
    UnitImage.objects.create(unit=unit, rank=0, image=f"{prefix}/tiles/unit_0001/00.jpg")
    unit_create(run, 1, images=1)  # an imported-style image under units/<run id>/
    return run


@pytest.fixture
def network(db: None) -> Network:
    network = Network(project=shared_project(), name="weights", architecture="toy")
    network.weights.save("toy.pt", ContentFile(b"weights-bytes"), save=False)
    network.save()
    return network


def _urls(run: DissectionRun, network: Network) -> list[str]:
    prefix = f"/media/runs/{run.pk}/conv4/report"
    images = UnitImage.objects.filter(unit__run=run).order_by("unit__channel")
    return [
        *(image.image.url for image in images),
        f"{prefix}/report.html",
        f"{prefix}/result.json",
        f"{prefix}/tally.csv",
        f"{prefix}/strips/unit_0001.jpg",
        network.weights.url,
    ]


def _body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_urls_are_the_media_prefix_the_view_answers(run: DissectionRun, network: Network) -> None:
    assert all(url.startswith("/media/") for url in _urls(run, network))
    assert run_reports(run=run) == [("conv4", f"/media/runs/{run.pk}/conv4/report/report.html")]


def test_anonymous_clients_and_crowd_workers_are_sent_to_login(
    run: DissectionRun, network: Network, django_user_model: Any
) -> None:
    worker = Client()  # a crowd worker's browser: it opened a batch link, it never logs in
    batch = services.batch_create(title="t", units=list(run.units.all()))
    services.batch_publish(batch=batch)
    assert worker.post(f"/w/{batch.public_id}/", {"worker_id": "alice"}).status_code == 302
    plain = logged_in(django_user_model.objects.create_user("plain", password="pw-plain-123456"))
    for client in (Client(), worker, plain):
        for url in _urls(run, network):
            response = client.get(url)
            assert response.status_code == 302 and response.url.startswith("/accounts/login/"), url
            assert b"dog" not in _body(response) and b"PNG" not in _body(response), url


def test_another_projects_requester_gets_404(
    run: DissectionRun, network: Network, django_user_model: Any
) -> None:
    other = Project.objects.create(name="Other lab")
    intruder = logged_in(staff_user(django_user_model, "intruder", project=other))
    for url in _urls(run, network):
        response = intruder.get(url)
        assert response.status_code == 404, url
        assert b"dog" not in _body(response) and b"weights-bytes" not in _body(response), url


def test_members_read_the_files_and_the_report_runs_no_script(
    run: DissectionRun, network: Network, staff_client: Client
) -> None:
    for url in _urls(run, network):
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert response["Cache-Control"].startswith("private")
    report = staff_client.get(f"/media/runs/{run.pk}/conv4/report/report.html")
    assert report["Content-Type"].startswith("text/html") and _body(report) == REPORT
    policy = report["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy and "img-src 'self'" in policy
    tile = staff_client.get(UnitImage.objects.filter(unit__run=run).first().image.url)
    assert tile["Content-Type"] == "image/jpeg" and _body(tile)[1:4] == b"PNG"
    weights = staff_client.get(network.weights.url)
    assert _body(weights) == b"weights-bytes" and weights["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize(
    "tail",
    [
        "runs/{run}/../../networks/weights/{weights}",
        "runs/{run}/./conv4/report/report.html",
        "runs//{run}/conv4/report/report.html",
        "runs/{run}",
        "runs/x/conv4/report/report.html",
        "units/{run}",
        "networks/weights/missing.pt",
        "elsewhere/secret.txt",
        "runs/9999/conv4/report/report.html",
    ],
)
def test_keys_outside_a_run_or_network_are_404_even_for_the_superuser(
    run: DissectionRun, network: Network, django_user_model: Any, tail: str
) -> None:
    default_storage.save("elsewhere/secret.txt", ContentFile(b"secret"))
    root = logged_in(django_user_model.objects.create_superuser("root", password="x-pw-1234567"))
    weights = network.weights.name.rsplit("/", 1)[1]
    response = root.get("/media/" + tail.format(run=run.pk, weights=weights))
    assert response.status_code == 404


def test_the_superuser_reads_every_project(
    run: DissectionRun, network: Network, django_user_model: Any
) -> None:
    root = logged_in(django_user_model.objects.create_superuser("root", password="x-pw-1234567"))
    for url in _urls(run, network):
        assert root.get(url).status_code == 200, url
