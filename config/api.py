"""The REST API at /api/ (django-ninja): the runs and annotate routers behind per-requester token
authentication, with the OpenAPI schema at /api/openapi.json and its docs page at /api/docs.

Errors are `{"detail": message}`: the service's own message (the one the pages show) with the status its
exception carries, 404 for an object the requester may not see, 401 without a live token, 422 for a request
that does not match the schema (`errors` then lists each field's problem), 502 when a crowd provider refuses.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, ValidationError

from annotate.api import router as annotate_router
from annotate.errors import AnnotateError
from annotate.providers import ProviderError
from runs.api import ApiTokenAuth
from runs.api import router as runs_router
from runs.errors import RunError

api = NinjaAPI(
    title="unitscope API",
    version="1",
    description="Runs, batches, assignments, exports and comparisons for requesters. Send "
    "`Authorization: Bearer <token>`; a token comes from `manage.py api_token create <username> --name ...`.",
    auth=ApiTokenAuth(),
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
)
api.add_router("/", runs_router)
api.add_router("/", annotate_router)


def _detail(request: HttpRequest, message: str, status: int, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"detail": message, **extra}, status=status)


@api.exception_handler(RunError)
def _run_error(request: HttpRequest, exc: RunError) -> HttpResponse:
    return _detail(request, str(exc), exc.status)


@api.exception_handler(AnnotateError)
def _annotate_error(request: HttpRequest, exc: AnnotateError) -> HttpResponse:
    return _detail(request, str(exc), exc.status)


@api.exception_handler(ProviderError)
def _provider_error(request: HttpRequest, exc: ProviderError) -> HttpResponse:
    return _detail(request, f"The crowd provider refused: {exc}", 502)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _detail(request, str(exc) or "Not found.", 404)


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _detail(request, "Send a live API token of a requester: Authorization: Bearer <token>.", 401)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = []
    for error in exc.errors:
        where = ".".join(
            str(part) for part in error.get("loc", ()) if part not in ("body", "payload", "query")
        )
        problems.append(
            f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))
        )
    return _detail(request, "; ".join(problems) or "Invalid request.", 422, errors=exc.errors)
