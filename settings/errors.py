"""One error shape for every response: {"error": {"code", "message", "request_id"}}.

Services raise `DomainError` subclasses; DRF's own exceptions and database outages are
translated here, in one place. 5xx bodies are generic and carry only the request id.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from audit.context import current_origin

logger = logging.getLogger("keyward.errors")


class DomainError(Exception):
    """A refusal a service can explain to its caller. Messages never contain secrets."""

    status = 400
    code = "invalid_request"
    message = "The request cannot be carried out."
    retry_after: int | None = None

    def __init__(
        self, message: str | None = None, *, retry_after: int | None = None, **extra: Any
    ) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        if retry_after is not None:
            self.retry_after = retry_after
        self.extra = extra


class Conflict(DomainError):
    status = 409
    code = "conflict"


class NotFound(DomainError):
    status = 404
    code = "not_found"
    message = "Not found."


class ServiceUnavailable(DomainError):
    status = 503
    code = "service_unavailable"
    message = "A dependency is unavailable; try again shortly."
    retry_after = 5


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


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: map every exception to the one error shape."""
    request = context.get("request")
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    if isinstance(exc, DomainError):
        status, code, message, extra = exc.status, exc.code, exc.message, dict(exc.extra)
        if exc.retry_after:
            headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, drf.APIException):
        status, code, message, extra = _drf_error(exc)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="keyward"'
        wait = getattr(exc, "wait", None)
        if status == 429 and wait:
            headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    elif isinstance(exc, OperationalError | InterfaceError):
        logger.error("database unavailable: %s", type(exc).__name__)
        status, code, message, extra = (
            503,
            "database_unavailable",
            "The database is unavailable.",
            {},
        )
        headers["Retry-After"] = "5"
    else:
        log_unhandled(exc)
        status, code, message, extra = 500, "internal_error", "Internal error.", {}
    if request is not None and status in (401, 403):
        from audit.denials import record_denial

        record_denial(request, status, _tenant_of(context))
    return Response(error_body(code, message, **extra), status=status, headers=headers)


def _tenant_of(context: dict[str, Any]) -> str | None:
    """The existing tenant a refused request was aimed at, so its denial lands in that
    tenant's chain (None for the global chain)."""
    view = context.get("view")
    slug = getattr(view, "kwargs", {}).get("slug") if view is not None else None
    if not isinstance(slug, str):
        return None
    from tenants.models import Tenant

    return slug if Tenant.objects.filter(slug=slug).exists() else None


def log_unhandled(exc: BaseException) -> None:
    """Log where an unexpected error happened without its message or locals, which may
    carry values (SQL parameters, provider responses) that must not reach the log."""
    logger.error("unhandled %s.%s\n%s", type(exc).__module__, type(exc).__name__, frames_only(exc))


def frames_only(exc: BaseException) -> str:
    """Where an exception passed: file, line and function, without source text or message."""
    return "\n".join(
        f"  {frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
    )


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, "not_found", "Not found.")


def json_server_error(request: HttpRequest) -> JsonResponse:
    return error_response(500, "internal_error", "Internal error.")


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, "bad_request", "Bad request.")


def json_forbidden(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(403, "forbidden", "You are not allowed to do this.")


__all__ = [
    "Conflict",
    "DatabaseError",
    "DomainError",
    "NotFound",
    "ServiceUnavailable",
    "error_response",
    "exception_handler",
]


class ExceptionTextFilter(logging.Filter):
    """Replaces a record's traceback with frames only: exception messages can quote values
    (SQL parameters, provider answers) that must never be written to a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            name = type(exc).__name__
            record.msg = f"{record.getMessage()}\n{name} (message withheld)\n{frames_only(exc)}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True
