"""The REST API of runs (`/api/`, assembled in `config.api`): projects, networks, probe sets, runs (launch,
status, cancel, results), and the token authentication every endpoint of the API uses.

Thin, as the pages are: the pages' forms parse what a client sends, `runs.services` writes, `runs.selectors`
reads, and every object is looked up among those the token's requester may see (`runs.access`), so another
project's object is a 404. Service errors become `{"detail": message}` with the message the pages show
(`config.api` maps them).
"""

from datetime import datetime
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from django.forms import Form
from django.http import Http404, HttpRequest
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import LimitOffsetPagination, paginate
from ninja.security import HttpBearer

from runs import selectors as run_selectors
from runs import services as run_services
from runs.access import projects_of
from runs.forms import RunForm, UnitFilterForm
from runs.models import DissectionRun, Network, ProbeSet, Project, Unit

M = TypeVar("M", bound=Model)
PAGE_MAX = 500
"""The most items one page of a list holds (`limit`; the default is 100)."""


class ApiTokenAuth(HttpBearer):
    """`Authorization: Bearer <key>` with a live token of an active staff account (`runs.models.ApiToken`).
    Sessions are not accepted, so no request is authenticated by a cookie and CSRF does not apply."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return run_services.api_token_authenticate(key=token)


def requester(request: HttpRequest) -> Any:
    """The user the request's token belongs to (set by `ApiTokenAuth`)."""
    return getattr(request, "auth")  # noqa: B009 (HttpRequest declares no `auth`; ninja sets it)


def visible_or_404(queryset: QuerySet[M], what: str, **lookup: Any) -> M:
    """The object of `queryset` (already scoped to the requester) matching `lookup`, else a 404 that says
    only that there is no such object: another project's ids do not leak."""
    found = queryset.filter(**lookup).first()
    if found is None:
        raise Http404(f"No such {what}.")
    return found


def form_message(form: Form) -> str:
    """A form's errors as one message, each field's as its page shows it under the field's label."""
    parts: list[str] = []
    for name, errors in form.errors.items():
        label = (
            "" if name == "__all__" else f"{form.fields[name].label or name.replace('_', ' ').capitalize()}: "
        )
        parts.extend(label + str(error) for error in errors)
    return " ".join(parts)


def form_data(form_class: type[Form], given: dict[str, Any]) -> dict[str, Any]:
    """A page form's data from what a client sent: a field left out (None) takes the form's initial value,
    so the API and the page share their defaults too."""
    data = {
        name: field.initial for name, field in form_class.base_fields.items() if field.initial is not None
    }
    data.update({name: value for name, value in given.items() if value is not None})
    return data


def form_valid(form: Form) -> None:
    """Raise a 400 with the form's errors unless it is valid."""
    if not form.is_valid():
        raise HttpError(400, form_message(form))


# --- schemas -----------------------------------------------------------------------------------------------


class ProjectOut(Schema):
    id: int
    name: str


class NetworkOut(Schema):
    id: int
    name: str
    project: str = Field(alias="project.name")
    project_id: int
    architecture: str
    layers: list[str]
    status: str = Field(description="pending (being checked), ready or failed")
    error: str
    created_at: datetime


class ProbeSetOut(Schema):
    id: int
    name: str
    project: str = Field(alias="project.name")
    project_id: int
    path: str
    image_count: int
    status: str = Field(description="pending (being checked), ready or failed")
    error: str
    created_at: datetime


class RunOut(Schema):
    id: int
    name: str
    project: str = Field(alias="project.name")
    project_id: int
    network_id: int | None
    probe_set_id: int | None
    layers: list[str]
    semantics: str
    topk: int
    status: str = Field(description="queued, running, failed, done or cancelled")
    progress: float = Field(description="0..1; GET /api/runs/{id}/status has the ETA and the steps")
    error: str
    shards_done: int
    shards_total: int
    unit_count: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_unit_count(run: DissectionRun) -> int:
        counted = getattr(run, "unit_count", None)
        return run.units.count() if counted is None else counted


class PhaseOut(Schema):
    phase: str = Field(description="scan, merge_scan, tally, merge_tally, render or publish")
    label: str
    done: int
    total: int


class RunStatusOut(Schema):
    """What the run page polls (`runs.selectors.run_status`)."""

    id: int
    status: str
    status_display: str
    progress: float = Field(description="0..1")
    percent: int
    eta_seconds: int | None = Field(description="Seconds left at the rate so far; null while estimating")
    eta_display: str
    error: str
    shards_done: int = Field(description="Steps done (shards of every phase)")
    shards_total: int = Field(description="Steps in all, fixed at launch")
    phases: list[PhaseOut]
    steps_display: str
    waits_for_broker: bool = Field(description="The task broker was down: the sweep hands the run on later")
    finished: bool


class RunLaunchIn(Schema):
    """The New run page's fields; a field left out takes the page's initial value."""

    name: str
    network: int = Field(description="Network id (GET /api/networks): a classifier or a generator")
    probe_set: int | None = Field(None, description="Probe set id (GET /api/probe-sets), for a classifier")
    segmenter: int | None = Field(
        None, description="For a generator: the segmenter network id that labels its samples"
    )
    samples: int | None = Field(None, description="For a generator: samples to dissect it on")
    seed: int | None = Field(None, description="For a generator: sample i is drawn from (seed, i)")
    tokens: str | None = Field(None, description="Token rule for transformer layers (default: auto)")
    layers: list[str] = Field(description="Layer names of the network, e.g. ['conv3', 'conv4']")
    project: int | None = Field(None, description="Project id; default: the network's project")
    shard_size: int | None = Field(None, description="Images per scan shard")
    topk: int | None = Field(None, description="Top images kept per unit")
    semantics: str | None = Field(None, description="paper (the default) or netdissect-lite")


class UnitOut(Schema):
    id: int
    layer: str
    channel: int = Field(description="0-based channel index")
    number: int = Field(description="The unit's number as people cite it: channel + 1 (tally.csv's unit)")
    label: str = Field(description="Automatic label (the best concept); empty until dissected")
    concept_category: str
    iou: float | None
    interpretable: bool | None
    threshold: float | None
    top_concepts: list[Any]

    @staticmethod
    def resolve_number(unit: Unit) -> int:
        return unit.number


# --- endpoints ---------------------------------------------------------------------------------------------

router = Router()


@router.get("/projects", response=list[ProjectOut], tags=["projects"])
@paginate(LimitOffsetPagination, max_limit=PAGE_MAX)
def project_list(request: HttpRequest) -> QuerySet[Project]:
    """The projects the requester is a member of (the superuser: all)."""
    return projects_of(requester(request))


@router.get("/networks", response=list[NetworkOut], tags=["networks"])
@paginate(LimitOffsetPagination, max_limit=PAGE_MAX)
def network_list(request: HttpRequest) -> QuerySet[Network]:
    return run_selectors.networks_overview(user=requester(request))


@router.get("/networks/{network_id}", response=NetworkOut, tags=["networks"])
def network_detail(request: HttpRequest, network_id: int) -> Network:
    return visible_or_404(run_selectors.networks_overview(user=requester(request)), "network", pk=network_id)


@router.get("/probe-sets", response=list[ProbeSetOut], tags=["probe sets"])
@paginate(LimitOffsetPagination, max_limit=PAGE_MAX)
def probe_set_list(request: HttpRequest) -> QuerySet[ProbeSet]:
    return run_selectors.probe_sets_overview(user=requester(request))


@router.get("/probe-sets/{probe_set_id}", response=ProbeSetOut, tags=["probe sets"])
def probe_set_detail(request: HttpRequest, probe_set_id: int) -> ProbeSet:
    return visible_or_404(
        run_selectors.probe_sets_overview(user=requester(request)), "probe set", pk=probe_set_id
    )


@router.get("/runs", response=list[RunOut], tags=["runs"])
@paginate(LimitOffsetPagination, max_limit=PAGE_MAX)
def run_list(request: HttpRequest) -> QuerySet[DissectionRun]:
    """Runs of the requester's projects, newest first."""
    return run_selectors.runs_overview(user=requester(request))


@router.post("/runs", response={201: RunOut}, tags=["runs"])
def run_launch(request: HttpRequest, payload: RunLaunchIn) -> Status[DissectionRun]:
    """Queue a dissection run, as the New run page does (the same checks, the same messages)."""
    user = requester(request)
    network = visible_or_404(Network.objects.visible_to(user), "network", pk=payload.network)
    if payload.probe_set is not None:
        visible_or_404(ProbeSet.objects.visible_to(user), "probe set", pk=payload.probe_set)
    if payload.segmenter is not None:
        visible_or_404(Network.objects.visible_to(user), "segmenter", pk=payload.segmenter)
    given = payload.dict() | {
        "project": payload.project or network.project_id,
        "layers": ", ".join(payload.layers),
    }
    form = RunForm(form_data(RunForm, given), user=user)
    form_valid(form)
    run = run_services.run_launch(**form.launch_kwargs(), created_by=user)
    return Status(201, run_selectors.runs_overview(user=user).get(pk=run.pk))


def _run(request: HttpRequest, run_id: int) -> DissectionRun:
    return visible_or_404(run_selectors.runs_overview(user=requester(request)), "run", pk=run_id)


@router.get("/runs/{run_id}", response=RunOut, tags=["runs"])
def run_detail(request: HttpRequest, run_id: int) -> DissectionRun:
    return _run(request, run_id)


@router.get("/runs/{run_id}/status", response=RunStatusOut, tags=["runs"])
def run_status(request: HttpRequest, run_id: int) -> dict[str, Any]:
    """Status and progress, as the run page polls them."""
    return run_selectors.run_status(run=_run(request, run_id))


@router.post("/runs/{run_id}/cancel", response=RunOut, tags=["runs"])
def run_cancel(request: HttpRequest, run_id: int) -> DissectionRun:
    """Stop a queued or running run; its remaining shards are dropped."""
    run_services.run_cancel(run=_run(request, run_id), actor=requester(request))
    return _run(request, run_id)


class UnitQuery(Schema):
    layer: str = Field(description="The layer whose units to list (GET /api/runs/{id} lists the layers)")
    label: str = Field("", description="Label contains")
    category: str = Field("", description="Concept category")
    min_iou: float | None = Field(None, description="IoU at least")
    interpretable: bool = Field(False, description="Interpretable units only")
    sort: str = Field("iou", description=", ".join(run_selectors.UNIT_SORTS))


@router.get("/runs/{run_id}/units", response=list[UnitOut], tags=["runs"])
@paginate(LimitOffsetPagination, max_limit=PAGE_MAX)
def run_units(request: HttpRequest, run_id: int, query: Query[UnitQuery]) -> QuerySet[Unit]:
    """The units of one layer of the run with their automatic labels, filtered and sorted as on the run
    page (highest IoU first unless `sort` says otherwise)."""
    run = _run(request, run_id)
    layers = run_selectors.run_layers(run=run)
    if query.layer not in layers:
        raise HttpError(
            400,
            f"Layer: run {run.name!r} has no units in layer {query.layer!r}; its layers: "
            f"{', '.join(layers) or 'none yet'}.",
        )
    form = UnitFilterForm(
        {**query.dict(exclude={"layer"}), "min_iou": "" if query.min_iou is None else query.min_iou},
        categories=run_selectors.run_categories(run=run, layer=query.layer),
    )
    form_valid(form)
    return run_selectors.run_units(run=run, layer=query.layer, filters=form.unit_filter())
