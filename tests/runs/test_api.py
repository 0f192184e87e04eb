"""The REST API's runs side and its tokens: a token is stored as its hash only and works until revoked or its
user stops being a requester; every endpoint answers 401 without a live token (a logged-in session is not
enough), another project's objects are 404, lists are paginated, and bad input is a 4xx with the message the
run pages show, with nothing stored. The OpenAPI schema lists every endpoint and the docs page renders."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from runs import services as runs
from runs.errors import RunError
from runs.models import ApiToken, AuditEvent, DissectionRun, Network, ProbeSet, Project, Shard
from tests.factories import logged_in, run_create, shared_project, staff_user, unit_create
from tests.runs.conftest import drain

# Every endpoint of the API with a method, the ids filled in by `_endpoints`.
ENDPOINTS = [
    ("get", "/api/projects"),
    ("get", "/api/networks"),
    ("get", "/api/networks/{network}"),
    ("get", "/api/probe-sets"),
    ("get", "/api/probe-sets/{probe_set}"),
    ("get", "/api/runs"),
    ("post", "/api/runs"),
    ("get", "/api/runs/{run}"),
    ("get", "/api/runs/{run}/status"),
    ("post", "/api/runs/{run}/cancel"),
    ("get", "/api/runs/{run}/units"),
    ("get", "/api/runs/{run}/comparison"),
    ("get", "/api/batches"),
    ("post", "/api/batches"),
    ("get", "/api/batches/{batch}"),
    ("get", "/api/batches/{batch}/progress"),
    ("post", "/api/batches/{batch}/publish"),
    ("post", "/api/batches/{batch}/pause"),
    ("post", "/api/batches/{batch}/cancel"),
    ("get", "/api/batches/{batch}/assignments"),
    ("post", "/api/batches/{batch}/review"),
    ("get", "/api/batches/{batch}/export"),
    ("get", "/api/batches/{batch}/comparison"),
    ("post", "/api/assignments/{assignment}/approve"),
    ("post", "/api/assignments/{assignment}/reject"),
    ("post", "/api/assignments/{assignment}/bonus"),
    ("post", "/api/assignments/{assignment}/block"),
    ("get", "/api/qualifications"),
    ("get", "/api/qualifications/{qualification}/results"),
]


def bearer(key: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {key}"})


def _network(project: Project, name: str = "toy") -> Network:
    return Network.objects.create(project=project, name=name, architecture="toy", layers=["conv3", "conv4"])


def _probe_set(project: Project, name: str = "probes") -> ProbeSet:
    return ProbeSet.objects.create(project=project, name=name, path="/data/probe", image_count=100)


@pytest.fixture
def boss(django_user_model: Any) -> Any:
    return staff_user(django_user_model)


@pytest.fixture
def api(boss: Any) -> Client:
    """The requester's client, sending their API token."""
    return bearer(runs.api_token_create(user=boss, name="tests")[1])


@pytest.fixture
def other_project(db: None) -> Project:
    return Project.objects.create(name="Other lab")


@pytest.fixture
def intruder(django_user_model: Any, other_project: Project) -> Client:
    """A requester of another project, with a token of their own."""
    user = staff_user(django_user_model, "intruder", project=other_project)
    return bearer(runs.api_token_create(user=user, name="theirs")[1])


@pytest.fixture
def mine(db: None) -> DissectionRun:
    project = shared_project()
    return run_create(
        "secret run",
        network=_network(project, "secret net"),
        probe_set=_probe_set(project, "secret probes"),
        status=DissectionRun.Status.RUNNING,
        layers=["conv4"],
    )


def _launch(network: Network, probe_set: ProbeSet, **fields: Any) -> dict[str, Any]:
    return {
        "name": "api run",
        "network": network.pk,
        "probe_set": probe_set.pk,
        "layers": ["conv3", "conv4"],
        "shard_size": 40,
        "topk": 4,
        **fields,
    }


# --- tokens ------------------------------------------------------------------------------------------------


def test_a_token_is_stored_as_its_hash_and_acts_as_its_requester(boss: Any) -> None:
    token, key = runs.api_token_create(user=boss, name="  my script ")
    assert key.startswith(runs.API_TOKEN_PREFIX) and len(key) > 40
    stored = ApiToken.objects.values().get(pk=token.pk)
    assert key not in [str(value) for value in stored.values()]
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert stored["name"] == "my script" and key.startswith(stored["prefix"])
    assert stored["last_used_at"] is None
    assert runs.api_token_authenticate(key=key) == boss
    token.refresh_from_db()
    assert token.last_used_at is not None
    other_token, other_key = runs.api_token_create(user=boss, name="second")
    assert other_key != key and other_token.key_hash != token.key_hash


def test_tokens_are_for_requesters_with_a_name(django_user_model: Any, boss: Any) -> None:
    plain = django_user_model.objects.create_user("plain", password="x-long-password-1")
    with pytest.raises(RunError, match="not an active staff account"):
        runs.api_token_create(user=plain, name="mine")
    with pytest.raises(RunError, match="Name: say what the token is for"):
        runs.api_token_create(user=boss, name="   ")
    assert not ApiToken.objects.exists()


def test_every_endpoint_answers_401_without_a_live_token(
    django_user_model: Any, boss: Any, mine: DissectionRun
) -> None:
    live_key = runs.api_token_create(user=boss, name="live")[1]
    revoked, revoked_key = runs.api_token_create(user=boss, name="revoked")
    runs.api_token_revoke(token=revoked)
    demoted = staff_user(django_user_model, "demoted")
    demoted_key = runs.api_token_create(user=demoted, name="demoted")[1]
    demoted.is_staff = False
    demoted.save()
    inactive = staff_user(django_user_model, "gone")
    inactive_key = runs.api_token_create(user=inactive, name="gone")[1]
    inactive.is_active = False
    inactive.save()
    refused = {
        "no token": Client(),
        "a logged-in session without a token": logged_in(boss),
        "a made-up token": bearer("us_" + "x" * 43),
        "the token's hash": bearer(ApiToken.objects.get(name="live").key_hash),
        "a token without its prefix": bearer(live_key.removeprefix(runs.API_TOKEN_PREFIX)),
        "a revoked token": bearer(revoked_key),
        "a token of a requester who is no longer staff": bearer(demoted_key),
        "a token of an inactive account": bearer(inactive_key),
        "the key as a basic password": Client(headers={"Authorization": f"Basic {live_key}"}),
    }
    ids = {"network": mine.network_id, "probe_set": mine.probe_set_id, "run": mine.pk}
    ids |= {
        "batch": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        "assignment": "1" * 8 + "-0000-0000-0000-" + "0" * 12,
        "qualification": "2" * 8 + "-0000-0000-0000-" + "0" * 12,
    }
    for who, client in refused.items():
        for method, path in ENDPOINTS:
            response = getattr(client, method)(path.format(**ids), content_type="application/json")
            assert response.status_code == 401, (who, method, path, response.content)
            assert "Authorization: Bearer" in response.json()["detail"], (who, path)
    mine.refresh_from_db()
    assert mine.status == DissectionRun.Status.RUNNING
    assert DissectionRun.objects.count() == 1
    assert bearer(live_key).get(f"/api/runs/{mine.pk}").status_code == 200


def test_the_command_creates_lists_and_revokes_tokens(boss: Any, capsys: pytest.CaptureFixture[str]) -> None:
    call_command("api_token", "create", "boss", "--name", "nightly export")
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert bearer(key).get("/api/runs").status_code == 200
    token = ApiToken.objects.get()
    call_command("api_token", "list")
    listing = capsys.readouterr().out
    assert "nightly export" in listing and key not in listing and token.prefix in listing
    call_command("api_token", "revoke", str(token.pk))
    assert bearer(key).get("/api/runs").status_code == 401
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="already revoked"):
        call_command("api_token", "revoke", str(token.pk))
    with pytest.raises(CommandError, match="no account called 'nobody'"):
        call_command("api_token", "create", "nobody", "--name", "x")


def test_the_admin_shows_a_new_key_once_and_revokes(django_user_model: Any, boss: Any) -> None:
    admin = django_user_model.objects.create_superuser("root", password="root-password-123")
    client = logged_in(admin)
    response = client.post(
        "/admin/runs/apitoken/add/", {"user": boss.pk, "name": "from the admin"}, follow=True
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(name="from the admin")
    shown = [str(message) for message in response.context["messages"]]
    key = next(word for message in shown for word in message.split() if word.startswith("us_"))
    assert hashlib.sha256(key.encode()).hexdigest() == token.key_hash
    assert token.user == boss
    assert bearer(key).get("/api/runs").status_code == 200
    client.post("/admin/runs/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True)
    assert bearer(key).get("/api/runs").status_code == 401
    # A requester cannot reach the token admin at all.
    assert logged_in(boss).get("/admin/runs/apitoken/").status_code in (302, 403)


# --- networks, probe sets, runs ----------------------------------------------------------------------------


def test_networks_and_probe_sets_of_ones_projects_only(
    api: Client, intruder: Client, mine: DissectionRun, other_project: Project
) -> None:
    theirs = _network(other_project, "their net")
    networks = api.get("/api/networks").json()
    assert [n["name"] for n in networks["items"]] == ["secret net"] and networks["count"] == 1
    assert networks["items"][0]["layers"] == ["conv3", "conv4"] and networks["items"][0]["project"] == "Tests"
    assert api.get(f"/api/networks/{mine.network_id}").json()["name"] == "secret net"
    response = api.get(f"/api/networks/{theirs.pk}")
    assert response.status_code == 404 and response.json() == {"detail": "No such network."}
    assert intruder.get(f"/api/networks/{mine.network_id}").status_code == 404
    probe_sets = api.get("/api/probe-sets").json()
    assert [p["name"] for p in probe_sets["items"]] == ["secret probes"]
    assert api.get(f"/api/probe-sets/{mine.probe_set_id}").json()["image_count"] == 100
    assert intruder.get(f"/api/probe-sets/{mine.probe_set_id}").json() == {"detail": "No such probe set."}
    assert intruder.get("/api/probe-sets").json() == {"items": [], "count": 0}
    assert [p["name"] for p in intruder.get("/api/projects").json()["items"]] == ["Other lab"]


def test_lists_are_paginated(api: Client) -> None:
    for i in range(5):
        _network(shared_project(), f"net {i}")
    first = api.get("/api/networks?limit=2").json()
    rest = api.get("/api/networks?limit=2&offset=2").json()
    last = api.get("/api/networks?limit=2&offset=4").json()
    assert first["count"] == rest["count"] == last["count"] == 5
    names = [n["name"] for page in (first, rest, last) for n in page["items"]]
    assert names == [f"net {i}" for i in range(5)]
    response = api.get("/api/networks?limit=0")
    assert response.status_code == 422 and "limit" in response.json()["detail"]


def test_a_run_is_launched_and_watched(api: Client, boss: Any) -> None:
    network, probe_set = _network(shared_project()), _probe_set(shared_project())
    response = api.post("/api/runs", _launch(network, probe_set), content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    run = DissectionRun.objects.get(name="api run")
    assert body["id"] == run.pk and body["status"] == "queued" and body["project"] == "Tests"
    assert run.created_by == boss and run.layers == ["conv3", "conv4"] and run.topk == 4
    assert Shard.objects.filter(run=run, phase=Shard.Phase.SCAN).count() == 3  # 100 images, 40 per shard
    status = api.get(f"/api/runs/{run.pk}/status").json()
    assert status["status"] == "queued" and status["percent"] == 0 and status["finished"] is False
    assert status["shards_total"] == run.shards_total and status["shards_done"] == 0
    assert api.get(f"/api/runs/{run.pk}").json()["unit_count"] == 0
    assert [r["name"] for r in api.get("/api/runs").json()["items"]] == ["api run"]
    launched = AuditEvent.objects.get(action="launch_run")
    assert launched.run == run and launched.actor == boss


def test_a_bad_launch_is_400_with_the_pages_message_and_stores_nothing(api: Client, boss: Any) -> None:
    network, probe_set = _network(shared_project()), _probe_set(shared_project())
    run_create("taken")
    cases = {
        "Layers: network 'toy' has no layer 'conv9'": _launch(network, probe_set, layers=["conv9"]),
        "Name: This field is required.": _launch(network, probe_set, name=""),
        "Name: a run called 'taken' exists already.": _launch(network, probe_set, name="taken"),
        "Images per shard: Ensure this value is greater than or equal to 1.": _launch(
            network, probe_set, shard_size=0
        ),
        "Semantics: Select a valid choice.": _launch(network, probe_set, semantics="mine"),
    }
    for message, payload in cases.items():
        response = api.post("/api/runs", payload, content_type="application/json")
        assert response.status_code == 400, (message, response.content)
        assert response.json()["detail"].startswith(message), response.json()
    # The page says the same about the same input.
    page = logged_in(boss).post(
        "/runs/new/",
        {**_launch(network, probe_set, layers="conv9"), "project": shared_project().pk, "semantics": "paper"},
    )
    assert page.status_code == 400 and "has no layer &#x27;conv9&#x27;" in page.content.decode()
    malformed = api.post("/api/runs", {"name": "x", "network": "toy"}, content_type="application/json")
    assert malformed.status_code == 422
    assert "network" in malformed.json()["detail"] and "layers" in malformed.json()["detail"]
    assert api.post("/api/runs", "not json", content_type="application/json").status_code in (400, 422)
    assert list(DissectionRun.objects.values_list("name", flat=True)) == ["taken"]
    assert not Shard.objects.exists()


def test_a_run_cannot_be_launched_on_another_projects_objects(
    intruder: Client, mine: DissectionRun, other_project: Project
) -> None:
    assert mine.network is not None and mine.probe_set is not None
    response = intruder.post(
        "/api/runs", _launch(mine.network, mine.probe_set), content_type="application/json"
    )
    assert response.status_code == 404 and response.json() == {"detail": "No such network."}
    their_network = _network(other_project, "their net")
    response = intruder.post(
        "/api/runs", _launch(their_network, mine.probe_set), content_type="application/json"
    )
    assert response.json() == {"detail": "No such probe set."}
    payload = _launch(their_network, _probe_set(other_project, "their probes"), project=shared_project().pk)
    response = intruder.post("/api/runs", payload, content_type="application/json")
    assert response.status_code == 400 and response.json()["detail"].startswith(
        "Project: Select a valid choice"
    )
    assert DissectionRun.objects.count() == 1


def test_another_projects_run_is_404_everywhere(intruder: Client, mine: DissectionRun) -> None:
    for path in ("", "/status", "/units?layer=conv4", "/comparison"):
        response = intruder.get(f"/api/runs/{mine.pk}{path}")
        assert response.status_code == 404 and response.json() == {"detail": "No such run."}, path
    assert intruder.post(f"/api/runs/{mine.pk}/cancel").status_code == 404
    assert intruder.get("/api/runs").json() == {"items": [], "count": 0}
    mine.refresh_from_db()
    assert mine.status == DissectionRun.Status.RUNNING


def test_a_run_is_cancelled_once(api: Client, boss: Any, mine: DissectionRun) -> None:
    response = api.post(f"/api/runs/{mine.pk}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = api.post(f"/api/runs/{mine.pk}/cancel")
    assert again.status_code == 400 and again.json() == {"detail": "A cancelled run cannot be cancelled."}
    assert api.get(f"/api/runs/{mine.pk}/status").json()["finished"] is True
    assert list(AuditEvent.objects.values_list("action", "actor")) == [("cancel_run", boss.pk)]


def test_a_runs_units_with_labels_and_iou(api: Client) -> None:
    run = run_create("done run", status=DissectionRun.Status.DONE, layers=["conv3", "conv4"])
    unit_create(run, 0, "conv4", images=1, label="sky", concept_category="scene", iou=0.05)
    unit_create(
        run, 97, "conv4", images=1, label="dog", concept_category="object", iou=0.2, interpretable=True
    )
    unit_create(
        run, 5, "conv4", images=1, label="cat", concept_category="object", iou=0.1, interpretable=True
    )
    unit_create(run, 3, "conv3", images=1, label="red", concept_category="color", iou=0.1)
    units = api.get(f"/api/runs/{run.pk}/units?layer=conv4").json()
    assert units["count"] == 3
    assert [(u["layer"], u["channel"], u["number"], u["label"]) for u in units["items"]] == [
        ("conv4", 97, 98, "dog"),  # highest IoU first, as on the run page
        ("conv4", 5, 6, "cat"),
        ("conv4", 0, 1, "sky"),
    ]
    dog = units["items"][0]
    assert (
        dog["iou"] == pytest.approx(0.2)
        and dog["interpretable"] is True
        and dog["concept_category"] == "object"
    )
    objects = api.get(f"/api/runs/{run.pk}/units?layer=conv4&category=object&sort=unit&limit=1").json()
    assert objects["count"] == 2 and [u["label"] for u in objects["items"]] == ["cat"]
    assert [u["label"] for u in api.get(f"/api/runs/{run.pk}/units?layer=conv3").json()["items"]] == ["red"]
    assert api.get(f"/api/runs/{run.pk}").json()["unit_count"] == 4
    bad = {
        "layer=conv9": "Layer: run 'done run' has no units in layer 'conv9'; its layers: conv3, conv4.",
        "layer=conv4&category=animal": "Category: Select a valid choice. animal is not one of the available",
        "layer=conv4&min_iou=2": "IoU at least: Ensure this value is less than or equal to 1.0.",
        "layer=conv4&sort=random": "Sort: Select a valid choice.",
    }
    for query, message in bad.items():
        response = api.get(f"/api/runs/{run.pk}/units?{query}")
        assert response.status_code == 400 and response.json()["detail"].startswith(message), response.json()
    missing = api.get(f"/api/runs/{run.pk}/units")
    assert missing.status_code == 422 and missing.json()["detail"] == "layer: Field required"


# --- schema and docs ---------------------------------------------------------------------------------------


def test_the_openapi_schema_lists_every_endpoint(db: None) -> None:
    schema = Client().get("/api/openapi.json").json()
    listed = {(method, path) for path, methods in schema["paths"].items() for method in methods}
    expected = {
        (
            method,
            path.replace("{network}", "{network_id}")
            .replace("{probe_set}", "{probe_set_id}")
            .replace("{run}", "{run_id}")
            .replace("{batch}", "{batch_id}")
            .replace("{assignment}", "{assignment_id}")
            .replace("{qualification}", "{qualification_id}"),
        )
        for method, path in ENDPOINTS
    }
    assert listed == expected
    assert schema["components"]["securitySchemes"]["ApiTokenAuth"]["scheme"] == "bearer"


def test_the_docs_page_renders(db: None, settings: Any) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    page = Client().get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui-bundle.js" in html and "/api/openapi.json" in html
    assert "cdn" not in html.lower()


# --- the README's example ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_readme_example_launches_a_run_publishes_a_batch_and_downloads_its_comparison(
    network_and_probe_set: tuple[Network, ProbeSet],
    django_user_model: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The README's code, run as written except its names (the toy network, the synthetic probe set) and with
    urllib's calls answered by the test client; waiting for the run drains its shards here."""
    import urllib.error
    import urllib.request

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## REST API\n.*?```python\n(.*?)```", readme, re.S)
    assert code is not None
    example = code.group(1)
    names = 'NETWORK, PROBE_SET, LAYER = "resnet18", "broden1_224", "layer4"'
    assert names in example
    example = example.replace(names, 'NETWORK, PROBE_SET, LAYER = "toy", "synthetic", "conv4"')

    boss = staff_user(django_user_model)
    monkeypatch.setenv("UNITSCOPE_URL", "http://testserver")
    monkeypatch.setenv("UNITSCOPE_TOKEN", runs.api_token_create(user=boss, name="readme")[1])
    monkeypatch.chdir(tmp_path)

    def urlopen(request: urllib.request.Request) -> io.BytesIO:
        path = request.full_url.removeprefix("http://testserver")
        client = Client(headers={"Authorization": str(request.get_header("Authorization"))})
        response = client.generic(
            request.get_method(), path, request.data or b"", content_type="application/json"
        )
        if response.status_code >= 400:
            raise urllib.error.HTTPError(path, response.status_code, "", {}, io.BytesIO(response.content))
        return io.BytesIO(response.content)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr("time.sleep", lambda seconds: drain(DissectionRun.objects.get(name="toy conv4")))
    exec(compile(example, "README.md", "exec"), {"__name__": "readme_example"})

    run = DissectionRun.objects.get(name="toy conv4")
    assert run.status == DissectionRun.Status.DONE and run.created_by == boss and run.units.exists()
    from annotate.models import Batch

    batch = Batch.objects.get(title="toy conv4")
    assert batch.state == Batch.State.PUBLISHED and batch.tasks.count() == 10 and batch.created_by == boss
    summary = json.loads((tmp_path / "var" / "comparison.json").read_text())
    assert "tables" in summary and "notes" in summary
    assert set(AuditEvent.objects.values_list("action", flat=True)) == {"launch_run", "publish"}
