"""The paint page of a generator run: members only (anonymous clients and crowd workers are sent to log in,
another project's requester and a classifier run get 404), CSRF enforced, every bad edit answered 400 with
what is wrong, and a valid stack of edits answered with the regenerated PNG, changed where brushed only.

The run is built directly (rows and files as a finished generator run leaves them): the hand-built
generator of tests/dissection/test_gan.py as TorchScript, its gan.json and its units."""

from __future__ import annotations

import base64
import functools
import io
import json
import re
from typing import Any

import numpy as np
import pytest
import torch
from django.core.files.base import ContentFile
from django.test import Client
from PIL import Image

from annotate import services
from dissection.gan.dissect import GAN_SCHEMA
from dissection.gan.models import Generator
from runs.models import DissectionRun, Network, Project
from runs.paint import paint_concepts
from runs.storage import report_prefix, store_bytes
from tests.dissection.test_gan import TREE_CHANNEL, HandGenerator
from tests.factories import logged_in, run_create, shared_project, staff_user, unit_create

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

SIZE = 16
TREE_IOU = [0.0, 0.01, 0.6, 0.0]  # by channel: unit 3 draws the tree, unit 2 barely overlaps it
THRESHOLDS = [1.0, 1.2, 2.0, 9.0]


@functools.cache
def hand_torchscript() -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(HandGenerator()), buffer)
    return buffer.getvalue()


def paint_run_create(name: str = "hand gan", project: Project | None = None) -> DissectionRun:
    """A finished generator run of layer `units` of the hand-built generator: its network (TorchScript),
    gan.json (tree IoU per unit) and units (unit 3 labelled tree)."""
    project = project or shared_project()
    network = Network(
        project=project,
        name=f"{name} generator",
        architecture="torchscript",
        kind="generator",
        latent_shape=[2],
    )
    network.torchscript.save("hand.pt", ContentFile(hand_torchscript()), save=False)
    network.save()
    run = run_create(
        name,
        project=project,
        network=network,
        layers=["units"],
        status=DissectionRun.Status.DONE,
        seed=0,
        samples=50,
    )
    document = {
        "schema": GAN_SCHEMA,
        "layer": "units",
        "seed": 0,
        "samples": 50,
        "image_size": [SIZE, SIZE],
        "mask_size": [SIZE, SIZE],
        "concepts": [{"label": "tree", "category": "object", "number": 1, "iou": TREE_IOU}],
    }
    store_bytes(f"{report_prefix(run.pk, 'units')}/gan.json", json.dumps(document).encode())
    for channel in range(4):
        tree = TREE_IOU[channel] > 0
        unit_create(
            run,
            channel,
            layer="units",
            images=1,
            label="tree" if tree else "",
            concept_category="object" if tree else "",
            iou=TREE_IOU[channel],
            threshold=THRESHOLDS[channel],
            interpretable=channel == TREE_CHANNEL,
        )
    return run


def mask_url(mask: np.ndarray, mode: str = "RGBA") -> str:
    """The mask as the page sends it: a PNG data URL, brushed pixels opaque white on transparent."""
    alpha = np.where(mask, 255, 0).astype(np.uint8)
    picture = (
        Image.fromarray(alpha, "L") if mode == "L" else Image.merge("RGBA", [Image.fromarray(alpha)] * 4)
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def sample_with_tree(tree: bool) -> int:
    z0 = Generator(HandGenerator(), latent_shape=(2,), where="hand", device="cpu").latents(0, range(50))[:, 0]
    return int(np.flatnonzero(((z0 > 1.5) == tree).numpy())[0])


def post(client: Client, run: DissectionRun, body: Any, **extra: Any) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/runs/{run.pk}/paint/", data, content_type="application/json", **extra)


def image_of(response: Any) -> np.ndarray:
    assert response.status_code == 200 and response["Content-Type"] == "image/png", response.content[:300]
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


@pytest.fixture
def run(db: None) -> DissectionRun:
    return paint_run_create()


def test_members_see_the_page_with_the_concepts_and_the_first_sample(
    run: DissectionRun, staff_client: Client
) -> None:
    response = staff_client.get(f"/runs/{run.pk}/paint/")
    assert response.status_code == 200
    concepts = response.context["concepts"]
    assert concepts == [
        {
            "label": "tree",
            "category": "object",
            "units": [{"number": 3, "iou": 0.6}, {"number": 2, "iou": 0.01}],
        }
    ]
    assert response.context["image_size"] == (SIZE, SIZE)
    first = base64.b64decode(response.context["first_image"].removeprefix("data:image/png;base64,"))
    plain = image_of(post(staff_client, run, {"layer": "units", "seed": 0, "index": 0, "edits": []}))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(first)).convert("RGB")), plain)
    assert 'id="paint-status" role="status" aria-live="polite"' in response.content.decode()


def test_anonymous_clients_and_crowd_workers_are_sent_to_log_in(
    run: DissectionRun, django_user_model: Any
) -> None:
    worker = Client()  # a crowd worker's browser: it opened a batch link, it never logs in
    batch = services.batch_create(title="t", units=list(run.units.all()))
    services.batch_publish(batch=batch)
    assert worker.post(f"/w/{batch.public_id}/", {"worker_id": "alice"}).status_code == 302
    plain = logged_in(django_user_model.objects.create_user("plain", password="pw-plain-123456"))
    for client in (Client(), worker, plain):
        for response in (client.get(f"/runs/{run.pk}/paint/"), post(client, run, {"layer": "units"})):
            assert response.status_code == 302 and response.url.startswith("/accounts/login/")


def test_another_projects_requester_and_a_classifier_run_get_404(
    run: DissectionRun, staff_client: Client, django_user_model: Any
) -> None:
    intruder = logged_in(
        staff_user(django_user_model, "intruder", project=Project.objects.create(name="Other"))
    )
    assert intruder.get(f"/runs/{run.pk}/paint/").status_code == 404
    assert post(intruder, run, {"layer": "units", "seed": 0, "index": 0, "edits": []}).status_code == 404
    classifier = Network.objects.create(project=shared_project(), name="cnn", architecture="toy")
    classified = run_create("cnn run", network=classifier, layers=["conv4"], status=DissectionRun.Status.DONE)
    imported = run_create("imported")
    for other in (classified, imported):
        assert staff_client.get(f"/runs/{other.pk}/paint/").status_code == 404
        assert (
            post(staff_client, other, {"layer": "conv4", "seed": 0, "index": 0, "edits": []}).status_code
            == 404
        )


def test_bad_requests_are_answered_400_saying_what_is_wrong(run: DissectionRun, staff_client: Client) -> None:
    good = {"concept": "tree", "units": 1, "action": "remove", "mask": mask_url(box(0, 8, 0, 8))}

    def body(**edit: Any) -> dict[str, Any]:
        return {"layer": "units", "seed": 0, "index": 0, "edits": [good, {**good, **edit}]}

    small = mask_url(np.ones((8, 8), bool))
    jpeg = io.BytesIO()
    Image.new("L", (SIZE, SIZE), 255).save(jpeg, format="JPEG")
    cases = [
        ("not json", r"the request body must be JSON"),
        (
            {"layer": "conv9", "seed": 0, "index": 0, "edits": []},
            r"layer: 'conv9' is not a layer of this run \(units\)",
        ),
        (
            {"layer": "units", "seed": -1, "index": 0, "edits": []},
            r"seed: must be a whole number from 0 to 2147483647",
        ),
        (
            {"layer": "units", "seed": 0, "index": "3", "edits": []},
            r"index: must be a whole number from 0 to 999999, not '3'",
        ),
        (body(mask=small), r"edit 2: mask is 8 x 8 px; the images are 16 x 16 px"),
        (body(mask="data:image/png;base64,aGVsbG8="), r"edit 2: mask is not a readable PNG image"),
        (body(mask="data:image/png;base64,***"), r"edit 2: mask is not valid base64"),
        (
            body(mask="data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()),
            r"edit 2: mask must be a PNG data URL",
        ),
        (
            body(mask="data:image/png;base64," + base64.b64encode(jpeg.getvalue()).decode()),
            r"edit 2: mask is a JPEG image, not a PNG",
        ),
        (body(mask=mask_url(np.zeros((SIZE, SIZE), bool))), r"edit 2: the brush covers no pixel"),
        (body(concept="sky"), r"edit 2: concept 'sky' is not one this layer's units draw"),
        (body(units=3), r"edit 2: units must be a whole number from 1 to 2, not 3"),
        (body(action="paint"), r"edit 2: action must be one of add, remove, not 'paint'"),
    ]
    for request, message in cases:
        response = post(staff_client, run, request)
        assert response.status_code == 400, message
        assert re.search(message, response.json()["error"]), (message, response.json())


def test_csrf_is_enforced(run: DissectionRun, django_user_model: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user(django_user_model))
    body = {"layer": "units", "seed": 0, "index": 0, "edits": []}
    assert post(client, run, body).status_code == 403
    assert (
        client.get(f"/runs/{run.pk}/paint/").status_code == 200
    )  # sets the CSRF cookie the page's script sends
    token = client.cookies["csrftoken"].value
    assert post(client, run, body, HTTP_X_CSRFTOKEN=token).status_code == 200


def test_a_valid_edit_changes_the_image_where_brushed_only(run: DissectionRun, staff_client: Client) -> None:
    index = sample_with_tree(True)
    base = {"layer": "units", "seed": 0, "index": index}
    plain = image_of(post(staff_client, run, {**base, "edits": []}))
    assert (plain[:8, :8, 0] == 255).all()  # the tree: red in the top-left quarter
    brushed = box(0, 8, 0, 4)
    edit = {"concept": "tree", "units": 1, "action": "remove", "mask": mask_url(brushed)}
    edited = image_of(post(staff_client, run, {**base, "edits": [edit]}))
    assert (edited[brushed][:, 0] == 0).all()  # no red left where brushed
    assert np.array_equal(edited[~brushed], plain[~brushed])
    opaque = image_of(post(staff_client, run, {**base, "edits": [{**edit, "mask": mask_url(brushed, "L")}]}))
    assert np.array_equal(opaque, edited)  # a grey mask without alpha reads the same

    index = sample_with_tree(False)
    base = {"layer": "units", "seed": 0, "index": index}
    plain = image_of(post(staff_client, run, {**base, "edits": []}))
    strokes = box(8, 12, 8, 16) | box(12, 16, 12, 16)
    add = {"concept": "tree", "units": 1, "action": "add", "mask": mask_url(strokes)}
    added = image_of(post(staff_client, run, {**base, "edits": [add]}))
    assert np.array_equal(added[..., 0] == 255, strokes)  # unit 3 at its threshold 2.0 draws red
    assert np.array_equal(added[~strokes], plain[~strokes])


def test_add_takes_the_causal_effects_mean_activation_where_measured(run: DissectionRun) -> None:
    effects = {"curves": [{"units": 1, "channels": [TREE_CHANNEL]}], "insertion_values": [1.7]}
    store_bytes(f"runs/{run.pk}/effects/units/00-tree/effects.json", json.dumps(effects).encode())
    (concept,) = paint_concepts(run, "units")
    assert [(u.number, u.value) for u in concept.units] == [(3, THRESHOLDS[TREE_CHANNEL]), (2, THRESHOLDS[1])]
    run.report = {
        "gan_effects": [
            {
                "layer": "units",
                "concept": "tree",
                "document": f"runs/{run.pk}/effects/units/00-tree/effects.json",
            }
        ]
    }
    run.save(update_fields=["report"])
    (concept,) = paint_concepts(run, "units")
    assert [(u.number, u.value) for u in concept.units] == [(3, 1.7), (2, THRESHOLDS[1])]
