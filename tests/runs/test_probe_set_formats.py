"""Registering a dataset in another format through the page: a worker converts it into storage with a
Job's progress, then the probe set is ready and dissects; a path outside the data folder is refused, and a
malformed dataset fails with a message naming its file and leaves no files and no usable probe set."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from django.core.files import File
from django.core.management import CommandError, call_command
from PIL import Image

from dissection.networks import ToyNet, ToyViT
from runs import services as runs
from runs import tasks
from runs.models import DissectionRun, Job, Network, ProbeSet, Readiness, Unit
from tests.factories import shared_project
from tests.runs.conftest import drain

COCO = "coco/annotations/instances_val2017.json"
"""The tiny COCO's annotations, under the data folder."""

# The TorchScript segmenter is a subject here; torch marks TorchScript deprecated.
pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")]


@pytest.fixture
def data_root(settings: Any, tmp_path: Path) -> Path:
    """PROBE_SET_SOURCE_ROOT with a tiny COCO: two 8 x 8 images, a person polygon and a car RLE."""
    root = tmp_path / "data"
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "val2017").mkdir()
    rng = np.random.default_rng(0)
    for name in ("000001.jpg", "000002.jpg"):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            root / "coco" / "val2017" / name
        )
    document = {
        "images": [
            {"id": 1, "file_name": "000001.jpg", "height": 8, "width": 8},
            {"id": 2, "file_name": "000002.jpg", "height": 8, "width": 8},
        ],
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
        ],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]],
            },
            {
                "id": 8,
                "image_id": 2,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": {"size": [8, 8], "counts": [32, 16, 16]},
            },
        ],
    }
    (root / COCO).write_text(json.dumps(document))
    settings.PROBE_SET_SOURCE_ROOT = root
    return root


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[object, ...]]]:
    """The tasks the services queue, recorded instead of sent (a test runs them as a worker would)."""
    calls: list[tuple[str, tuple[object, ...]]] = []

    def send(task: str, *args: object) -> bool:
        calls.append((task, args))
        return True

    monkeypatch.setattr(runs, "task_send", send)
    return calls


@pytest.fixture
def register(staff_client: Any, django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[..., Any]:
    """register(**fields): the requester posts the probe-set form (the tiny COCO unless `fields` say
    otherwise), with what the view queues on commit sent; returns the response."""

    def post(**fields: Any) -> Any:
        data = {
            "project": shared_project().pk,
            "name": "coco",
            "source_format": "coco",
            "image_size": 32,
            "path": COCO,
        }
        with django_capture_on_commit_callbacks(execute=True):
            return staff_client.post("/probe-sets/new/", {**data, **fields})

    return post


@pytest.fixture
def convert(
    register: Callable[..., Any], sent: list[tuple[str, tuple[object, ...]]]
) -> Callable[..., ProbeSet]:
    """convert(**fields): `register`, which redirects, then the queued conversion run as a worker would;
    returns the probe set."""

    def run(**fields: Any) -> ProbeSet:
        assert register(**fields).status_code == 302
        work(sent)
        return ProbeSet.objects.get(name=fields.get("name", "coco"))

    return run


def work(sent: list[tuple[str, tuple[object, ...]]]) -> None:
    """Run the queued conversions, as a worker on the gpu queue would."""
    for task, args in sent:
        if task == "probe_set_convert":
            tasks.probe_set_convert.run(*args)


def conversion_job(probe_set: ProbeSet) -> Job:
    return Job.objects.get(key=f"probe-set-{probe_set.pk}-convert")


def register_coco_command(image_size: int, *options: str) -> ProbeSet:
    """`manage.py register_probe_set` of the tiny COCO."""
    call_command(
        "register_probe_set", "coco", COCO, "--format", "coco", "--image-size", str(image_size), *options
    )
    return ProbeSet.objects.get(name="coco")


def register_network(
    name: str, make: Callable[[], torch.nn.Module], folder: Path, architecture: str = "", **fields: Any
) -> Network:
    """Register a module made after torch.manual_seed(0): its state dict as the weights of `architecture`,
    or (with none) the module itself as TorchScript."""
    torch.manual_seed(0)
    module, path = make(), folder / f"{name}.pt"
    if architecture:
        torch.save(module.state_dict(), path)
    else:
        torch.jit.script(module).save(str(path))
    with path.open("rb") as handle:
        return runs.network_register(
            project=shared_project(),
            name=name,
            architecture=architecture,
            inspect_now=True,
            **{"weights" if architecture else "torchscript": File(handle, path.name)},
            **fields,
        )


def test_a_coco_dataset_registered_on_the_page_is_converted_and_dissected(
    staff_client: Any,
    data_root: Path,
    register: Callable[..., Any],
    sent: list[tuple[str, tuple[object, ...]]],
    tmp_path: Path,
    settings: Any,
) -> None:
    form = staff_client.get("/probe-sets/new/").content.decode()
    assert 'value="pascal-context"' in form and 'value="coco"' in form
    assert register().status_code == 302
    probe_set = ProbeSet.objects.get(name="coco")
    assert (probe_set.status, probe_set.path, probe_set.source_format) == (Readiness.PENDING, "", "coco")
    job = conversion_job(probe_set)
    assert job.status == Job.Status.QUEUED
    assert [task for task, _ in sent] == ["probe_set_convert"]
    work(sent)
    probe_set.refresh_from_db()
    job.refresh_from_db()
    assert (probe_set.status, probe_set.image_count, probe_set.error) == (Readiness.READY, 2, "")
    assert Path(probe_set.path) == Path(settings.MEDIA_ROOT) / "probe_sets" / str(probe_set.pk)
    assert (job.status, job.done, job.total) == (Job.Status.DONE, 2, 2)
    labels = (Path(probe_set.path) / "label.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in labels[1:]] == ["person", "car"]

    network = register_network("toy", ToyNet, tmp_path, "toy")
    run = runs.run_launch(
        project=shared_project(),
        name="on coco",
        network=network,
        probe_set=probe_set,
        layers=["conv1"],
        topk=2,
    )
    assert drain(run).status == DissectionRun.Status.DONE
    assert Unit.objects.filter(run=run).count() == 32


def test_a_path_outside_the_data_folder_is_refused(
    data_root: Path, register: Callable[..., Any], sent: list[tuple[str, tuple[object, ...]]], tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    outside = tmp_path / "elsewhere" / "instances.json"
    outside.write_text("{}")
    (data_root / "link").symlink_to(tmp_path / "elsewhere")
    for path in (str(outside), "../elsewhere/instances.json", "link/instances.json"):
        response = register(path=path)
        assert response.status_code == 400
        assert "is not inside the data folder" in response.content.decode()
    assert not ProbeSet.objects.exists() and not Job.objects.exists() and not sent


def test_a_malformed_dataset_fails_with_its_file_named_and_nothing_left(
    staff_client: Any, data_root: Path, convert: Callable[..., ProbeSet], settings: Any
) -> None:
    annotations = data_root / COCO
    document = json.loads(annotations.read_text())
    document["annotations"][1]["category_id"] = 99
    annotations.write_text(json.dumps(document))
    probe_set = convert()
    job = conversion_job(probe_set)
    assert probe_set.status == Readiness.FAILED and probe_set.path == ""
    assert "instances_val2017.json" in probe_set.error and "99" in probe_set.error
    assert job.status == Job.Status.FAILED and job.error == probe_set.error
    assert not (Path(settings.MEDIA_ROOT) / "probe_sets").exists() or not any(
        (Path(settings.MEDIA_ROOT) / "probe_sets").iterdir()
    )
    assert ">coco</option>" not in staff_client.get("/runs/new/").content.decode()
    assert html.escape(probe_set.error) in staff_client.get("/runs/").content.decode()


def test_the_command_converts_and_refuses_what_the_page_refuses(data_root: Path, settings: Any) -> None:
    probe_set = register_coco_command(16)
    assert (probe_set.status, probe_set.image_count) == (Readiness.READY, 2)
    with pytest.raises(CommandError, match="is not inside the data folder"):
        call_command("register_probe_set", "other", "/etc", "--format", "folder")
    (data_root / "empty").mkdir()
    with pytest.raises(CommandError, match=r"empty/labels.csv is missing"):
        call_command("register_probe_set", "other", "empty", "--format", "folder")
    assert list(ProbeSet.objects.values_list("name", flat=True)) == ["coco"]


class Segmenter(torch.nn.Module):
    """Three classes: background, then one per colour channel (red → sky, green → grass)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), 10 * x[:, :2]], dim=1)


def test_a_folder_labelled_by_a_registered_segmenter_becomes_a_probe_set(
    data_root: Path, register: Callable[..., Any], convert: Callable[..., ProbeSet], tmp_path: Path
) -> None:
    (data_root / "photos").mkdir()
    for name, colour in (("red.png", (255, 0, 0)), ("green.png", (0, 255, 0))):
        Image.fromarray(np.full((12, 10, 3), colour, np.uint8)).save(data_root / "photos" / name)
    concepts = [
        {"name": "background", "category": ""},
        {"name": "sky", "category": "region"},
        {"name": "grass", "category": "material"},
    ]
    segmenter = register_network("segmenter", Segmenter, tmp_path, kind="segmenter", concepts=concepts)
    probe_set = convert(
        name="photos", source_format="segmented", path="photos", segmenter=segmenter.pk, image_size=16
    )
    assert (probe_set.status, probe_set.image_count) == (Readiness.READY, 2)
    labels = (Path(probe_set.path) / "label.csv").read_text().splitlines()
    assert [line.split(",")[1:3] for line in labels[1:]] == [["sky", "region(1)"], ["grass", "material(1)"]]
    missing = register(name="x", source_format="segmented", path="photos")
    assert "images labelled by a segmenter need one" in missing.content.decode()


def test_a_transformer_layer_is_offered_with_its_token_rule_and_dissected(
    staff_client: Any,
    data_root: Path,
    django_capture_on_commit_callbacks: Callable[..., Any],
    tmp_path: Path,
) -> None:
    probe_set = register_coco_command(32, "--project", shared_project().name)
    network = register_network("vit", ToyViT, tmp_path, "toy-vit")
    assert (
        network.token_layers["blocks.1"]
        == "cls · N x 785 x 32 tokens -> 32 x 28 x 28, 1 prefix token dropped"
    )
    page = staff_client.get("/runs/new/").content.decode()
    offered = json.loads(page.split('id="network-tokens" type="application/json">')[1].split("</script>")[0])
    assert offered[str(network.pk)]["blocks.1"].startswith("cls · ")
    fields = {
        "project": shared_project().pk,
        "name": "vit on coco",
        "network": network.pk,
        "probe_set": probe_set.pk,
        "layers": "blocks.1",
        "shard_size": 64,
        "topk": 2,
        "semantics": "paper",
    }
    with django_capture_on_commit_callbacks(execute=True):
        refused = staff_client.post("/runs/new/", {**fields, "tokens": "cls+x"})
    assert "Token rule: --tokens &#x27;cls+x&#x27; is not one of" in refused.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.post("/runs/new/", {**fields, "tokens": "cls"}).status_code == 302
    run = DissectionRun.objects.get(name="vit on coco")
    assert run.tokens == "cls"
    assert drain(run).status == DissectionRun.Status.DONE
    assert Unit.objects.filter(run=run).count() == 32
