"""Paint with units: the interactive page of a generator run (GAN Dissection's editor).

GET shows the page; POST takes the whole stack of edits as JSON and answers the regenerated image as a PNG
(so undo is the page dropping its last edit and asking again, and the server keeps no state per person):

    {"layer": str, "seed": int, "index": int,
     "edits": [{"concept": str, "units": n, "action": "add" | "remove",
                "mask": "data:image/png;base64,…"  (the brush at the image's size: alpha, or grey when opaque,
                                                      of at least 128 is brushed)}]}

A concept's units are its top n by IoU in the layer, ranked by the run's gan.json. "add" sets each unit to
its mean activation where the concept is present, as the run's causal effects measured it (for the units
and concepts they cover); elsewhere to the unit's threshold, the activation its top 0.5 % of positions
exceed (the level at which dissection says the unit draws its concept). The generator is loaded once per
process (`runs.networks.network_generator`), and one `Painter` per network file and layer keeps recent
samples' layer outputs.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods
from PIL import Image, UnidentifiedImageError

from dissection.errors import DissectionError
from dissection.gan.dissect import GAN_SCHEMA, concept_ranking
from dissection.gan.models import Generator
from dissection.gan.paint import ACTIONS, BrushEdit, Painter
from runs.access import staff_required
from runs.models import DissectionRun, Network
from runs.networks import network_generator
from runs.storage import report_prefix

MAX_UNITS = 16
"""The most units of one concept an edit can take (the sizes offered are 1, 2, 4, … up to this)."""
MAX_EDITS = 100
PAINT_THREADS = 1
"""One sample's forward is too small to share between threads: on a busy CPU the spinning intra-op threads
cost the demo's generator 0.31 s an edit, one thread 0.006 s (measured with the two cores oversubscribed)."""
MAX_MASK_BYTES = 256 * 1024
MAX_SEED = 2**31 - 1
MAX_INDEX = 10**6 - 1
PNG_DATA_URL = "data:image/png;base64,"
EFFECTS_KEY = "gan_effects"  # runs.effects.REPORT_KEY, read here without importing its plotting


class PaintError(Exception):
    """A request the page cannot paint; the message says which field of which edit is wrong."""


@dataclass(frozen=True)
class PaintUnit:
    channel: int
    iou: float
    value: float | None  # what "add" sets it to; None when the run stores no level for it

    @property
    def number(self) -> int:
        return self.channel + 1


@dataclass(frozen=True)
class PaintConcept:
    label: str
    category: str
    units: tuple[PaintUnit, ...]  # best IoU first

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "category": self.category,
            "units": [{"number": u.number, "iou": round(u.iou, 4)} for u in self.units],
        }


_painters: WeakKeyDictionary[Generator, dict[str, Painter]] = WeakKeyDictionary()
_documents: dict[tuple[int, str, str], dict[str, Any]] = {}
_loading = threading.Lock()


def _generator_run(request: HttpRequest, run_id: int) -> DissectionRun:
    """The run, if the user may see it and it dissected a generator; 404 otherwise."""
    run = get_object_or_404(
        DissectionRun.objects.visible_to(request.user).select_related("network"), pk=run_id
    )
    if run.network is None or run.network.kind != Network.Kind.GENERATOR:
        raise Http404("only a generator run has a paint page")
    return run


def painter_for(run: DissectionRun, layer: str) -> Painter:
    """One painter per loaded generator and layer: the generator is loaded once per process, keyed by its
    network and stored file (`network_generator`), and its painters live as long as it does."""
    assert run.network is not None
    with _loading:
        generator = network_generator(run.network)
        painters = _painters.setdefault(generator, {})
        if layer not in painters:
            painters[layer] = Painter(generator, layer, threads=PAINT_THREADS)
        return painters[layer]


def _gan_document(run: DissectionRun, layer: str) -> dict[str, Any]:
    """The layer's gan.json (every concept's IoU with every unit), read once per process: a finished run's
    report does not change."""
    key = (run.pk, layer, run.created_at.isoformat())
    if key not in _documents:
        name = f"{report_prefix(run.pk, layer)}/gan.json"
        if not default_storage.exists(name):
            raise PaintError(f"layer {layer!r} of run {run.name!r} has no gan.json yet; is the run finished?")
        with default_storage.open(name, "rb") as handle:
            document = json.load(handle)
        if document.get("schema") != GAN_SCHEMA:
            raise PaintError(f"{name}: schema {document.get('schema')!r}, expected {GAN_SCHEMA}")
        _documents[key] = document
    return _documents[key]


def _effect_values(run: DissectionRun, layer: str) -> dict[tuple[str, int], float]:
    """(concept, channel) → the unit's mean activation where the concept is present, for the concepts and
    units the run's causal effects measured."""
    values: dict[tuple[str, int], float] = {}
    for entry in run.report.get(EFFECTS_KEY) or []:
        if not isinstance(entry, dict) or entry.get("layer") != layer or not entry.get("document"):
            continue
        try:
            with default_storage.open(entry["document"], "rb") as handle:
                effects = json.load(handle)
            channels, levels = effects["curves"][-1]["channels"], effects["insertion_values"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue  # a missing or partial effects file: the thresholds stand in
        for channel, level in zip(channels, levels or [], strict=False):
            values[(str(entry.get("concept")), int(channel))] = float(level)
    return values


def paint_concepts(run: DissectionRun, layer: str) -> list[PaintConcept]:
    """The concepts the layer's units are labelled with, each with its top units by IoU (best concept
    first)."""
    document = _gan_document(run, layer)
    units = run.units.filter(layer=layer)
    thresholds = {unit.channel: unit.threshold for unit in units}
    labels = sorted({unit.label for unit in units if unit.label})
    effect_values = _effect_values(run, layer)
    concepts = []
    for label in labels:
        try:
            entry, ranking = concept_ranking(document, label)
        except DissectionError:
            continue  # a label the segmenter does not have (an imported unit): nothing to paint with
        ranked = tuple(
            PaintUnit(
                int(channel),
                float(entry["iou"][channel]),
                effect_values.get((label, int(channel)), thresholds.get(int(channel))),
            )
            for channel in ranking[:MAX_UNITS]
            if entry["iou"][channel] > 0
        )
        if ranked:
            concepts.append(PaintConcept(label, str(entry.get("category") or ""), ranked))
    return sorted(concepts, key=lambda c: (-c.units[0].iou, c.label))


@staff_required
@require_http_methods(["GET", "POST"])
def run_paint(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _generator_run(request, run_id)
    if request.method == "POST":
        return _paint(request, run)
    layers = list(run.layers)
    layer = request.GET.get("layer") if request.GET.get("layer") in layers else (layers[0] if layers else "")
    context: dict[str, Any] = {"run": run, "layers": layers, "layer": layer, "concepts": [], "error": ""}
    try:
        if not layer:
            raise PaintError(f"run {run.name!r} dissected no layer")
        context["concepts"] = [c.as_dict() for c in paint_concepts(run, layer)]
        first = painter_for(run, layer).paint(run.seed, 0)
        height, width = first.shape[:2]
        context.update(
            image_size=(height, width),
            first_image=PNG_DATA_URL + base64.b64encode(_png(first)).decode(),
            max_radius=max(2, width // 4),
            radius=max(1, width // 16),
        )
    except (PaintError, DissectionError) as exc:
        context["error"] = str(exc)
    context["max_index"] = MAX_INDEX  # any sample of any seed can be drawn, not only the dissected ones
    return render(request, "runs/paint.html", context)


def _paint(request: HttpRequest, run: DissectionRun) -> HttpResponse:
    try:
        layer, seed, index, edits = _read_request(request, run)
        image = painter_for(run, layer).paint(seed, index, edits)
    except (PaintError, DissectionError) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    response = HttpResponse(_png(image), content_type="image/png")
    response["Cache-Control"] = "no-store"
    return response


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _read_request(request: HttpRequest, run: DissectionRun) -> tuple[str, int, int, list[BrushEdit]]:
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise PaintError("the request body must be JSON: {layer, seed, index, edits}") from None
    if not isinstance(body, dict):
        raise PaintError("the request body must be a JSON object: {layer, seed, index, edits}")
    layer = body.get("layer")
    if not isinstance(layer, str) or layer not in run.layers:
        raise PaintError(f"layer: {layer!r} is not a layer of this run ({', '.join(run.layers)})")
    seed = _integer(body, "seed", MAX_SEED)
    index = _integer(body, "index", MAX_INDEX)
    edits = body.get("edits", [])
    if not isinstance(edits, list):
        raise PaintError("edits: must be a list")
    if len(edits) > MAX_EDITS:
        raise PaintError(f"edits: at most {MAX_EDITS} edits, not {len(edits)}; reset and start again")
    if not edits:
        return layer, seed, index, []
    concepts = {c.label: c for c in paint_concepts(run, layer)}
    size = painter_for(run, layer).image_size(seed)
    return layer, seed, index, [_edit(edit, n, concepts, size) for n, edit in enumerate(edits, 1)]


def _integer(body: dict[str, Any], field: str, largest: int) -> int:
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= largest:
        raise PaintError(f"{field}: must be a whole number from 0 to {largest}, not {value!r}")
    return value


def _edit(edit: Any, number: int, concepts: dict[str, PaintConcept], size: tuple[int, int]) -> BrushEdit:
    where = f"edit {number}"
    if not isinstance(edit, dict):
        raise PaintError(f"{where}: must be an object {{concept, units, action, mask}}")
    name = edit.get("concept")
    concept = concepts.get(name) if isinstance(name, str) else None
    if concept is None:
        raise PaintError(f"{where}: concept {name!r} is not one this layer's units draw")
    count = edit.get("units")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(concept.units):
        raise PaintError(
            f"{where}: units must be a whole number from 1 to {len(concept.units)}, not {count!r}"
        )
    action = edit.get("action")
    if action not in ACTIONS:
        raise PaintError(f"{where}: action must be one of {', '.join(ACTIONS)}, not {action!r}")
    units = concept.units[:count]
    values: tuple[float, ...] = ()
    if action == "add":
        missing = [u.number for u in units if u.value is None]
        if missing:
            raise PaintError(f"{where}: unit {missing[0]} has no stored activation level to add")
        values = tuple(float(u.value) for u in units if u.value is not None)
    mask = brush_mask(edit.get("mask"), size, where)
    return BrushEdit(tuple(u.channel for u in units), action, mask, values)


def brush_mask(data: Any, size: tuple[int, int], where: str) -> np.ndarray:
    """H x W bool from a PNG data URL of the image's size (alpha, or grey when it has no alpha, >= 128)."""
    if not isinstance(data, str) or not data.startswith(PNG_DATA_URL):
        raise PaintError(f"{where}: mask must be a PNG data URL ({PNG_DATA_URL}…)")
    if len(data) > MAX_MASK_BYTES * 4 // 3 + len(PNG_DATA_URL) + 4:
        raise PaintError(f"{where}: mask is larger than {MAX_MASK_BYTES // 1024} KiB")
    try:
        raw = base64.b64decode(data[len(PNG_DATA_URL) :], validate=True)
    except (binascii.Error, ValueError):
        raise PaintError(f"{where}: mask is not valid base64") from None
    try:
        picture = Image.open(io.BytesIO(raw))
        if picture.format != "PNG":
            raise PaintError(f"{where}: mask is a {picture.format} image, not a PNG")
        height, width = size
        if picture.size != (width, height):
            raise PaintError(
                f"{where}: mask is {picture.size[0]} x {picture.size[1]} px; "
                f"the images are {width} x {height} px"
            )
        channel = picture.getchannel("A") if "A" in picture.getbands() else picture.convert("L")
        mask = np.asarray(channel) >= 128
    except (UnidentifiedImageError, OSError, ValueError):
        raise PaintError(f"{where}: mask is not a readable PNG image") from None
    if not mask.any():
        raise PaintError(f"{where}: the brush covers no pixel")
    return mask
