"""Generator runs in the service: a generator and its segmenter registered as networks, dissected through the
sharded pipeline with the segmenter's in-memory labels (the numbers `gan-run` gives on the same inputs), its
units batched and answered like any unit, its causal effects stored and shown on the run page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from torch import nn

from annotate.models import Annotation, Assignment
from annotate.services import batch_create, batch_publish
from dissection.gan.dissect import dissect_generator
from dissection.gan.models import load_generator, load_segmenter
from runs import services as runs
from runs.effects import gan_effects_build
from runs.errors import RunError
from runs.models import DissectionRun, Network, Shard, Unit, UnitImage
from runs.networks import generator_images, generator_load
from tests.dissection.test_gan import TREE_CHANNEL, HandRender, HandUnits, RedSegmenter
from tests.factories import logged_in, shared_project, staff_user

from .conftest import drain

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

SAMPLES, SEED, TOPK = 90, 4, 6
CONCEPTS_CSV = "name,category\nnothing,\ntree,object\n"


class SumUnits(nn.Module):
    """N x C x H x W → N x H x W: not an image batch."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.sum(1)


def _script(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    _script(nn.Sequential(HandUnits(), HandRender()), folder / "hand-generator.pt")
    _script(RedSegmenter(), folder / "red-segmenter.pt")
    (folder / "classes.csv").write_text(CONCEPTS_CSV)
    return folder


def _register(name: str, path: Path, **kwargs: Any) -> Network:
    with path.open("rb") as handle:
        return runs.network_register(
            project=shared_project(),
            name=name,
            architecture="",
            torchscript=File(handle, name=path.name),
            inspect_now=True,
            **kwargs,
        )


@pytest.fixture
def pair(db: None, media: Path, models_dir: Path) -> tuple[Network, Network]:
    generator = _register("hand gen", models_dir / "hand-generator.pt", kind="generator", latent_shape=[2])
    segmenter = _register(
        "red seg",
        models_dir / "red-segmenter.pt",
        kind="segmenter",
        concepts=runs.segmenter_concepts_read(data=CONCEPTS_CSV.encode(), filename="classes.csv"),
    )
    return generator, segmenter


def _launch(pair: tuple[Network, Network], name: str = "gan run", **kwargs: Any) -> DissectionRun:
    generator, segmenter = pair
    options = {"layers": ["0"], "shard_size": 32, "topk": TOPK, "samples": SAMPLES, "seed": SEED, **kwargs}
    return runs.run_launch(
        project=generator.project, name=name, network=generator, segmenter=segmenter, **options
    )


@pytest.fixture
def done_run(pair: tuple[Network, Network], monkeypatch: pytest.MonkeyPatch) -> DissectionRun:
    monkeypatch.setattr(runs, "task_send", lambda task, *args: True)  # effects are built by the tests below
    run = drain(_launch(pair))
    assert run.status == DissectionRun.Status.DONE, run.error
    return run


def test_registered_generator_and_segmenter_are_checked_and_loadable(pair: tuple[Network, Network]) -> None:
    generator, segmenter = pair
    assert generator.kind == "generator" and generator.layers == ["0", "1"]
    assert segmenter.concepts == [{"name": "nothing", "category": ""}, {"name": "tree", "category": "object"}]
    module = generator_load(generator)
    assert not module.training
    assert tuple(module(torch.zeros(3, 2)).shape) == (3, 3, 16, 16)


def test_a_generator_run_gives_the_numbers_gan_run_gives(
    done_run: DissectionRun, models_dir: Path, tmp_path: Path
) -> None:
    assert Shard.objects.filter(run=done_run, phase="scan").count() == 3  # 90 samples in shards of 32
    generator = load_generator(models_dir / "hand-generator.pt", latent_shape=[2], device="cpu")
    segmenter = load_segmenter(
        models_dir / "red-segmenter.pt", mask_size=(16, 16), classes=models_dir / "classes.csv", device="cpu"
    )
    folder = dissect_generator(
        generator, segmenter, tmp_path / "cli", layers=["0"], samples=SAMPLES, seed=SEED, topk=TOPK
    )["0"]
    expected = json.loads((folder / "result.json").read_text())["units"]
    units = list(Unit.objects.filter(run=done_run).order_by("channel"))
    assert [(u.channel, u.label, u.concept_category) for u in units] == [
        (e["channel"], e["label"], e["category"]) for e in expected
    ]
    assert [u.iou for u in units] == pytest.approx([e["iou"] for e in expected], abs=1e-9)
    assert units[TREE_CHANNEL].label == "tree" and units[TREE_CHANNEL].interpretable
    top = [image["index"] for image in expected[TREE_CHANNEL]["images"]]
    ranked = UnitImage.objects.filter(unit=units[TREE_CHANNEL]).order_by("rank")
    assert [int(i.source_image.split("/")[-1].split(".")[0]) for i in ranked] == top
    stored = json.loads(default_storage.open(f"runs/{done_run.pk}/0/report/gan.json").read())
    assert stored["seed"] == SEED and stored["samples"] == SAMPLES


def test_generator_units_are_batched_and_answered_through_the_worker_page(
    done_run: DissectionRun, django_user_model: Any
) -> None:
    units = list(Unit.objects.filter(run=done_run).order_by("channel"))
    batch = batch_create(
        title="GAN units", units=units, images_per_task=TOPK, created_by=staff_user(django_user_model)
    )
    batch_publish(batch=batch)
    tree = units[TREE_CHANNEL]
    tiles = list(UnitImage.objects.filter(unit=tree).order_by("rank"))
    assert all(tile.image for tile in tiles)
    # The tiles show the samples drawn again from (seed, index): the top sample's tile is its image,
    # highlighted where the unit fires.
    sample = generator_images(done_run.network, SEED, [int(tiles[0].source_image[7:13])])[0]
    assert sample[..., 0].max() == 255  # a tree sample: red

    client = Client()
    started = client.post(f"/w/{batch.public_id}/", {"worker_id": "alice"})
    assert client.get(started.url).status_code == 302
    task_page = client.get(f"/w/{batch.public_id}/next/")
    accepted = client.post(task_page.url)
    page = client.get(accepted.url)
    assert page.status_code == 200
    assert page.content.count(b'type="checkbox" name="rejected"') == TOPK
    assert b"tree" not in page.content  # the automatic label never reaches a worker
    task = Assignment.objects.get(public_id=accepted.url.rstrip("/").split("/")[-1]).task
    image = client.get(reverse("annotate:task_image", args=[task.public_id, 1]))
    assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"
    done = client.post(accepted.url, {"words": "red blob", "category": "object", "rejected": []})
    assert done.status_code == 302
    assert Annotation.objects.filter(assignment__worker__label="alice").count() == 1

    requester = logged_in(staff_user(django_user_model, "boss2"))
    dashboard = requester.get(reverse("annotate:run_comparison", args=[done_run.pk]))
    assert dashboard.status_code == 200


def test_effects_are_stored_and_shown_on_the_run_page(
    done_run: DissectionRun, django_user_model: Any
) -> None:
    entries = gan_effects_build(run_id=done_run.pk, concepts=2, samples=40, limit=2, controls=2)
    assert [e["concept"] for e in entries] == ["tree"]
    (entry,) = entries
    for key in ("plot", "ablation", "insertion", "document"):
        assert default_storage.exists(entry[key])
    effects = json.loads(default_storage.open(entry["document"]).read())
    first = effects["curves"][0]
    assert first["channels"] == [TREE_CHANNEL] and first["ablation"]["mean"] > 0
    assert np.isfinite(first["ablation_control"]["mean"])
    done_run.refresh_from_db()
    assert done_run.report["gan_effects"] == entries
    client = logged_in(staff_user(django_user_model))
    page = client.get(reverse("runs:run_detail", args=[done_run.pk]))
    html = page.content.decode()
    assert reverse("runs:paint", args=[done_run.pk]) in html
    tree = Unit.objects.get(run=done_run, channel=TREE_CHANNEL)
    assert client.get(reverse("annotate:unit_detail", args=[tree.pk])).status_code == 200
    assert client.get(reverse("runs:run_list")).status_code == 200
    assert "Causal effects" in html and entry["summary"].split(" (")[0] in html.replace("&#x27;", "'")
    assert reverse("runs:media", args=[entry["plot"]]) in html
    assert reverse("runs:media", args=[entry["ablation"]]) in html


def test_publishing_a_generator_run_queues_its_effects(
    pair: tuple[Network, Network], monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    sent: list[tuple[str, tuple[object, ...]]] = []
    monkeypatch.setattr(runs, "task_send", lambda task, *args: sent.append((task, args)) or True)
    run = _launch(pair, samples=8)
    with django_capture_on_commit_callbacks(execute=True):
        drain(run)
    assert ("gan_effects", (run.pk,)) in sent


def test_bad_generator_runs_and_networks_are_refused_by_name(
    pair: tuple[Network, Network], models_dir: Path, media: Path
) -> None:
    generator, segmenter = pair
    with pytest.raises(RunError, match=r"Layers: network 'hand gen' has no layer 'nope'"):
        _launch(pair, layers=["nope"])
    with pytest.raises(RunError, match="Segmenter: pick the segmenter"):
        runs.run_launch(project=generator.project, name="x", network=generator, layers=["0"], samples=8)
    with pytest.raises(RunError, match="'hand gen' is a generator, not a segmenter"):
        _launch((generator, generator))
    with pytest.raises(RunError, match="Samples: a generator run needs at least 2"):
        _launch(pair, samples=1)
    with pytest.raises(RunError, match="'red seg' is a segmenter"):
        runs.run_launch(project=generator.project, name="x", network=segmenter, layers=["0"])
    wrong = _script(nn.Sequential(HandUnits(), SumUnits()), models_dir / "wrong.pt")
    with pytest.raises(RunError, match=r"generator wrong outputs \(1, 4, 4\) .* must output N x 3 x H x W"):
        _register("wrong", wrong, kind="generator", latent_shape=[2])
    three = runs.segmenter_concepts_read(data=b"name,category\na,\nb,object\nc,object\n", filename="c.csv")
    with pytest.raises(RunError, match="segmenter seg3 outputs 2 classes but its concepts list 3"):
        _register("seg3", models_dir / "red-segmenter.pt", kind="segmenter", concepts=three)
    with pytest.raises(RunError, match="Latent shape: a TorchScript generator needs its latent shape"):
        _register("nolatent", models_dir / "hand-generator.pt", kind="generator")
    with pytest.raises(RunError, match=r"classes\.csv row 3: the class needs a name"):
        runs.segmenter_concepts_read(data=b"name,category\na,\n,object\n", filename="classes.csv")
    assert set(Network.objects.values_list("name", flat=True)) == {"hand gen", "red seg"}
    assert not DissectionRun.objects.exists()
    with pytest.raises(CommandError, match="outputs 2 classes but its concepts list 3"):
        (models_dir / "three.csv").write_text("name,category\na,\nb,object\nc,object\n")
        call_command(
            "register_network",
            "seg3",
            "--kind",
            "segmenter",
            "--torchscript",
            str(models_dir / "red-segmenter.pt"),
            "--concepts",
            str(models_dir / "three.csv"),
        )


def test_the_run_form_launches_a_generator_run(pair: tuple[Network, Network], django_user_model: Any) -> None:
    generator, segmenter = pair
    client = logged_in(staff_user(django_user_model))
    page = client.get(reverse("runs:run_create"))
    assert b'id="network-kinds"' in page.content and b"id_segmenter" in page.content
    response = client.post(
        reverse("runs:run_create"),
        {
            "project": generator.project_id,
            "name": "from the form",
            "network": generator.pk,
            "segmenter": segmenter.pk,
            "samples": 16,
            "seed": 2,
            "layers": "0",
            "shard_size": 8,
            "topk": 4,
            "semantics": "paper",
        },
    )
    assert response.status_code == 302, response.content
    run = DissectionRun.objects.get(name="from the form")
    assert (run.segmenter, run.samples, run.seed, run.probe_set) == (segmenter, 16, 2, None)


@pytest.mark.slow
def test_the_demo_gan_is_trained_dissected_and_its_effects_shown_once(
    shared_db: str, demo_cache: Path, monkeypatch: pytest.MonkeyPatch, django_user_model: Any
) -> None:
    from runs import demo_gan, effects
    from runs.demo import demo_project

    monkeypatch.setattr(effects, "SAMPLES", 8)
    monkeypatch.setattr(effects, "LIMIT", 2)
    monkeypatch.setattr(effects, "CONTROLS", 1)
    project = demo_project()
    user = staff_user(django_user_model, "requester", project=project)
    reports: list[tuple[int, int, str]] = []

    def build() -> str:
        return demo_gan.demo_gan_build(
            project=project,
            user=user,
            progress=lambda done, total, note: reports.append((done, total, note)),
            epochs=1,
            steps=2,
            scenes=32,
            samples=24,
        )

    link = build()
    run = DissectionRun.objects.get(name=demo_gan.GAN_RUN)
    assert run.status == DissectionRun.Status.DONE and run.layers == [demo_gan.GAN_LAYER]
    assert (run.network.kind, run.segmenter.kind) == ("generator", "segmenter")
    assert Unit.objects.filter(run=run).count() == 48  # layer1: 2 x width units
    assert isinstance(run.report[effects.REPORT_KEY], list)
    assert reports[-1][:2] == (100, 100)
    page = logged_in(user).get(link)
    assert page.status_code == 200 and "Causal effects" in page.content.decode()
    reports.clear()
    assert build() == link  # nothing trained, registered or dissected again
    assert not any("training" in note for _, _, note in reports)
    assert DissectionRun.objects.count() == 1 and Network.objects.count() == 2


def test_the_register_form_takes_a_segmenter_with_its_concepts_file(
    media: Path, models_dir: Path, django_user_model: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = logged_in(staff_user(django_user_model))
    page = client.get(reverse("runs:network_create"))
    assert (
        b"id_kind" in page.content and b"id_concepts" in page.content and b"id_latent_shape" in page.content
    )

    def post(name: str, concepts: bytes) -> Any:
        return client.post(
            reverse("runs:network_create"),
            {
                "project": shared_project().pk,
                "name": name,
                "kind": "segmenter",
                "torchscript": SimpleUploadedFile("seg.pt", (models_dir / "red-segmenter.pt").read_bytes()),
                "concepts": SimpleUploadedFile("classes.csv", concepts),
            },
        )

    refused = post("bad", b"name\nnothing\n")
    assert refused.status_code == 400 and b"header lacks column(s) category" in refused.content
    assert post("seg", CONCEPTS_CSV.encode()).status_code == 302
    runs.network_inspect(network_id=Network.objects.get(name="seg").pk)  # what the worker does
    network = Network.objects.get(name="seg")
    assert network.status == "ready", network.error
    assert network.kind == "segmenter" and [c["name"] for c in network.concepts] == ["nothing", "tree"]


def test_a_generator_run_is_launched_through_the_api_with_the_forms_checks(
    pair: tuple[Network, Network], django_user_model: Any
) -> None:
    generator, segmenter = pair
    key = runs.api_token_create(user=staff_user(django_user_model), name="t")[1]
    api = Client(headers={"Authorization": f"Bearer {key}"})
    payload = {"name": "api gan", "network": generator.pk, "layers": ["0"], "samples": SAMPLES, "seed": SEED}

    missing = api.post("/api/runs", payload, content_type="application/json")
    assert missing.status_code == 400 and "segmenter" in missing.json()["detail"].lower(), missing.json()
    response = api.post("/api/runs", {**payload, "segmenter": segmenter.pk}, content_type="application/json")

    assert response.status_code == 201, response.content
    run = DissectionRun.objects.get(name="api gan")
    assert (run.network, run.segmenter, run.probe_set) == (generator, segmenter, None)
    assert (run.samples, run.seed, run.layers) == (SAMPLES, SEED, ["0"])
    assert DissectionRun.objects.count() == 1
