"""The webhook Prolific calls when a submission's or a study's status changes.

Prolific signs each call: `X-Prolific-Request-Signature` is the base64 HMAC-SHA256, keyed with the
workspace's secret (PROLIFIC_WEBHOOK_SECRET, made by POST /api/v1/hooks/secrets/), of the
`X-Prolific-Request-Timestamp` header followed by the request body. A call whose signature does not match,
or whose timestamp is more than WEBHOOK_MAX_AGE_S away, changes nothing. Events are idempotent (a status is
set, not toggled), so a repeated delivery does no harm; polling (`manage.py sync_prolific`) catches any
event that never arrives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from annotate.services.prolific import prolific_study_update, prolific_submission_update

log = logging.getLogger(__name__)

WEBHOOK_MAX_AGE_S = 300
SIGNATURE_HEADER = "X-Prolific-Request-Signature"
TIMESTAMP_HEADER = "X-Prolific-Request-Timestamp"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Prolific's signature of a webhook call."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _verified(request: HttpRequest) -> str | None:
    """None when the call is Prolific's; else why not."""
    secret = settings.PROLIFIC_WEBHOOK_SECRET
    if not secret:
        return "webhooks are off: PROLIFIC_WEBHOOK_SECRET is not set"
    sent = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    try:
        age = abs(time.time() - float(timestamp))
    except ValueError:
        return f"{TIMESTAMP_HEADER} is missing or not a UNIX time"
    if age > WEBHOOK_MAX_AGE_S:
        return f"{TIMESTAMP_HEADER} is {age:.0f} s away from now"
    if not hmac.compare_digest(signature(secret, timestamp, request.body), sent):
        return f"{SIGNATURE_HEADER} does not match"
    return None


@csrf_exempt
@require_POST
def prolific_webhook(request: HttpRequest) -> HttpResponse:
    """submission.status.change and study.status.change; other event types are acknowledged and ignored."""
    refused = _verified(request)
    if refused:
        log.warning("refused a Prolific webhook call: %s", refused)
        return JsonResponse({"error": refused}, status=403)
    try:
        event = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "the body is not JSON"}, status=400)
    if not isinstance(event, dict):
        return JsonResponse({"error": "the body is not a JSON object"}, status=400)
    kind = str(event.get("event_type", ""))
    resource = str(event.get("resource_id", ""))
    status = str(event.get("status", ""))
    if kind in ("submission.status.change", "study.status.change") and not (resource and status):
        return JsonResponse({"error": f"{kind} needs resource_id and status"}, status=400)
    if kind == "submission.status.change":
        result = prolific_submission_update(
            submission_id=resource, status=status, participant_id=str(event.get("participant_id", ""))
        )
        return JsonResponse({"updated": result.updated, "unknown": result.unknown})
    if kind == "study.status.change":
        return JsonResponse({"known": prolific_study_update(study_id=resource, status=status)})
    return JsonResponse({"ignored": kind})
