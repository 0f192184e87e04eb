"""The audit trail of a batch as CSV (staff, the batch's project only); the batch page shows it too."""

from __future__ import annotations

import io

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_safe

from annotate.models import Batch
from runs.access import staff_required
from runs.audit import audit_csv_write, audit_events


@staff_required
@require_safe
def batch_audit_export(request: HttpRequest, batch_id: str) -> HttpResponse:
    """Every decision recorded for the batch, oldest first."""
    batch = get_object_or_404(Batch.objects.visible_to(request.user), public_id=batch_id)
    buffer = io.StringIO()
    audit_csv_write(audit_events(user=request.user, batch_key=batch.public_id).order_by("at", "pk"), buffer)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.public_id}-audit.csv"'
    return response
