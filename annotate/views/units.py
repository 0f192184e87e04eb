"""The unit page (staff only): everything known about one unit, from its top images to the crowd's answers.

The unit is looked up among the runs the user may see (`runs.access`): another project's unit is a 404, and a
crowd worker (never a staff account) is sent to the login page.
"""

from __future__ import annotations

import logging

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from annotate.selectors.comparison import Aggregation
from annotate.selectors.units import unit_page, unit_visible
from annotate.views.comparison import AGGREGATIONS
from runs.access import staff_required
from runs.errors import RunError
from runs.featviz import featviz_unit
from runs.services import unit_tiles_ensure

log = logging.getLogger(__name__)


def _aggregation(request: HttpRequest) -> Aggregation:
    """The comparison page's aggregation choice (Dawid–Skene unless ?aggregation=majority)."""
    value = request.GET.get("aggregation", "dawid_skene")
    if value not in AGGREGATIONS:
        raise Http404(f"Unknown aggregation {value!r}.")
    return value


@staff_required
@require_safe
def unit_detail(request: HttpRequest, unit_id: int) -> HttpResponse:
    aggregation = _aggregation(request)
    unit = unit_visible(user=request.user, unit_id=unit_id)
    if unit is None:
        raise Http404("No such unit.")
    tiles_missing = False
    try:
        unit_tiles_ensure(unit_ids=[unit.pk])  # a dissected unit's full-size tiles are made on first need
    except RunError:
        log.exception("tiles of unit %s could not be made", unit.pk)
        tiles_missing = True
    page = unit_page(user=request.user, unit=unit, aggregation=aggregation)
    return render(
        request,
        "annotate/unit_detail.html",
        {
            "page": page,
            "unit": unit,
            "aggregation": aggregation,
            "aggregations": AGGREGATIONS,
            "tiles": page.tiles(),
            "tiles_missing": tiles_missing,
            "featviz": featviz_unit(unit=unit),
            "answer_rows": [(answer, page.answer_marks(answer)) for answer in page.answers],
        },
    )
