"""A task's images for the worker pages (local, Prolific, MTurk's frame): streamed from Django's default
storage (local disk or S3) under the task's unguessable id and the image's rank only.

The media URL of a tile names the run and layer, and the same folder holds the report with the automatic
labels, so workers never get it: the response carries the image and nothing else (no file name, no
Content-Disposition), and only the ranks the task shows are served.
"""

from __future__ import annotations

import logging
import mimetypes

from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_safe

from annotate import selectors
from annotate.models import Task
from runs.errors import RunError
from runs.models import UnitImage
from runs.services import unit_tiles_ensure

log = logging.getLogger(__name__)

CACHE_CONTROL = "private, max-age=3600"


@require_safe
def task_image(request: HttpRequest, task_id: str, rank: int) -> FileResponse:
    """Image `rank` of the task (its preview and answer pages show these), or 404."""
    task = get_object_or_404(Task.objects.select_related("batch", "unit"), public_id=task_id)
    if task.kind == Task.Kind.TWOAFC:  # a trial's references come per assignment, under its condition
        raise Http404("No such image.")
    return unit_image_response(selectors.task_image(task=task, rank=rank))


def unit_image_response(image: UnitImage | None) -> FileResponse:
    """`image` as a bare image response (no file name), its tiles made first if need be; None is a 404."""
    if image is not None and not image.image.name:  # a dissected unit's tiles are made on first need
        try:
            unit_tiles_ensure(unit_ids=[image.unit_id])
        except RunError:
            log.exception("tiles of unit %s could not be made", image.unit_id)
            raise Http404("No such image.") from None
        image.refresh_from_db(fields=["image"])
    name = image.image.name if image is not None else None
    if image is None or not name:
        raise Http404("No such image.")
    try:
        handle = image.image.storage.open(name, "rb")
    except OSError:
        raise Http404("No such image.") from None
    content_type, _ = mimetypes.guess_type(name)
    response = FileResponse(
        handle,
        content_type=content_type if content_type and content_type.startswith("image/") else "image/png",
    )
    # FileResponse names the file (inline; filename=...): the name would tell the unit, so it goes.
    response.headers.pop("Content-Disposition", None)
    response["Cache-Control"] = CACHE_CONTROL
    return response
