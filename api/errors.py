"""One error shape for every response: {"error": {"code", "message", "request_id"}}.

Services raise `DomainError` subclasses; DRF's own exceptions and database outages are
translated here, in one place. 5xx bodies are generic and carry only the request id.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from audit.actors import Actor
from audit.models import Outcome
from audit.recorder import AuditUnavailable, record_refusal
from core.context import current_origin
from core.errors import DomainError
from core.logging import log_unhandled
from kms.ratelimit import note_auth_failure
from tenants import queries
from tenants.actors import actor_for
from tenants.models import Tenant

logger = logging.getLogger("keyward.errors")


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "request_id": current_origin().request_id,
            **extra,
        }
    }


def error_response(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    response = JsonResponse(error_body(code, message, **extra), status=status)
    response["Cache-Control"] = "no-store"
    return response


def _drf_error(exc: drf.APIException) -> tuple[int, str, str, dict[str, Any]]:
    if isinstance(exc, drf.ValidationError):
        return 400, "invalid", "The request has invalid fields.", {"fields": exc.detail}
    if isinstance(exc, drf.ParseError):
        return 400, "malformed_body", "The request body is not valid JSON.", {}
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return 401, "unauthenticated", "Missing or invalid credentials.", {}
    if isinstance(exc, drf.PermissionDenied):
        return 403, "forbidden", "You are not allowed to do this.", {}
    if isinstance(exc, drf.NotFound):
        return 404, "not_found", "Not found.", {}
    if isinstance(exc, drf.MethodNotAllowed):
        return 405, "method_not_allowed", "Method not allowed.", {}
    if isinstance(exc, drf.NotAcceptable):
        return 406, "not_acceptable", "Only application/json is served.", {}
    if isinstance(exc, drf.UnsupportedMediaType):
        return 415, "unsupported_media_type", "Send application/json.", {}
    if isinstance(exc, drf.Throttled):
        return 429, "rate_limited", "Too many requests.", {}
    return exc.status_code, "error", str(exc.detail), {}


@dataclass
class Failure:
    """How an exception is answered: status, code, message, extra fields and headers."""

    status: int
    code: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=lambda: {"Cache-Control": "no-store"})

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, **self.extra)


def describe(exc: Exception) -> Failure:
    """The one mapping from an exception to the error shape, for DRF views and the plain
    hot-path views alike. Unexpected exceptions are logged without their text."""
    if isinstance(exc, RequestDataTooBig):  # a chunked body past the limit, read in full
        return Failure(413, "body_too_large", "The request body is too large.")
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    if isinstance(exc, DomainError):
        failure = Failure(exc.status, exc.code, exc.message, dict(exc.extra))
        if exc.retry_after:
            failure.headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, drf.APIException):
        failure = Failure(*_drf_error(exc))
        if failure.status == 401:
            failure.headers["WWW-Authenticate"] = 'Bearer realm="keyward"'
        wait = getattr(exc, "wait", None)
        if failure.status == 429 and wait:
            failure.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    elif isinstance(exc, OperationalError | InterfaceError):
        logger.error("database unavailable: %s", type(exc).__name__)
        failure = Failure(503, "database_unavailable", "The database is unavailable.")
        failure.headers["Retry-After"] = "5"
    else:
        log_unhandled(exc)
        failure = Failure(500, "internal_error", "Internal error.")
    return failure


def needs_refusal_event(exc: Exception, failure: Failure) -> bool:
    """A 401 or 403 that no action has recorded yet."""
    return failure.status in (401, 403) and not getattr(exc, "audited", False)


def unauthenticated(request: Any, failure: Failure) -> Failure:
    """Count a 401 against its source address. The first of each source, reason and
    minute is audited at once; the rest are counted and summarised once the minute is over
    (`auth.failed_repeated`), so no one can fill the append-only log; past
    KEYWARD_AUTH_FAILURE_LIMIT in a minute the answer is 429."""
    raw = getattr(request, "_request", request)
    origin = getattr(raw, "keyward_origin", None)
    reason = getattr(raw, "keyward_auth_failure", {}).get("reason", "no_credentials")
    count = note_auth_failure(getattr(origin, "source_ip", None), reason)
    if count == 1:
        audit_refusal(request, 401, actor=Actor.anonymous(), tenant=None)
    if count <= settings.AUTH_FAILURE_LIMIT:
        return failure
    limited = Failure(429, "rate_limited", "Too many failed authentications; slow down.")
    limited.headers["Retry-After"] = str(60 - int(time.time()) % 60)
    return limited


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: map every exception to the one error shape."""
    request = context.get("request")
    failure = describe(exc)
    if request is not None and failure.status == 401 and not getattr(exc, "audited", False):
        failure = unauthenticated(request, failure)
    elif request is not None and needs_refusal_event(exc, failure):
        view = context.get("view")
        actor = Actor.anonymous() if failure.status == 401 else getattr(view, "actor", None)
        audit_refusal(
            request,
            failure.status,
            actor=actor or actor_for(request.user),
            tenant=_tenant_of(view),
        )
    return Response(failure.body(), status=failure.status, headers=failure.headers)


def audit_refusal(request: Any, status: int, *, actor: Actor, tenant: str | None) -> None:
    """Audit a 401 or 403 that no action recorded (or a 404 that hides another tenant's
    object), in the chain of the tenant it concerns. A failure to record is logged and the
    refusal still stands."""
    raw = getattr(request, "_request", request)  # a DRF request wraps Django's
    failure: dict[str, str] = getattr(raw, "keyward_auth_failure", {})
    details: dict[str, Any] = {
        "method": request.method,
        "path": request.path[:200],
        "status": status,
        **failure,
    }
    action = "auth.failed" if status == 401 else "access.denied"
    try:
        record_refusal(action, actor=actor, outcome=Outcome.DENIED, tenant=tenant, details=details)
    except (AuditUnavailable, DatabaseError):
        logger.error("could not record %s for request", action)


def _tenant_of(view: Any) -> str | None:
    """The existing tenant a refused request was aimed at, so its refusal lands in that
    tenant's chain (None for the global chain)."""
    scope = getattr(view, "scope", None)
    if isinstance(scope, Tenant):
        return scope.slug
    slug = getattr(view, "kwargs", {}).get("slug") if view is not None else None
    if not isinstance(slug, str):
        return None
    return slug if queries.tenants().filter(slug=slug).exists() else None


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, "not_found", "Not found.")


def json_server_error(request: HttpRequest) -> JsonResponse:
    return error_response(500, "internal_error", "Internal error.")


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, "bad_request", "Bad request.")


def json_forbidden(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(403, "forbidden", "You are not allowed to do this.")
