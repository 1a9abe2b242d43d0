"""Plain Django views for the hot path (token issue, introspection, exchange).

They keep every rule the DRF views keep (bearer authentication with one 401 for every
cause, per-principal rate limits, strict JSON bodies, the one error shape, a refusal event
for a 401 or 403 no action recorded) without DRF's request wrapping, content negotiation
and per-request permission objects. Each view carries its OpenAPI description, which
`api.schema` adds to the document.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from api.authentication import AuthenticationFailed, actor_of_credential, identify
from api.errors import audit_refusal, describe, needs_refusal_event, unauthenticated
from api.inputs import Body, json_body
from audit.actors import Actor
from core.errors import DomainError
from kms.ratelimit import check_rate
from tenants.access import Access, access_for
from tenants.models import ServicePrincipal

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class Unauthenticated(DomainError):
    status = 401
    code = "unauthenticated"
    message = "Missing or invalid credentials."


class Forbidden(DomainError):
    status = 403
    code = "forbidden"
    message = "You are not allowed to do this."


class MethodNotAllowed(DomainError):
    status = 405
    code = "method_not_allowed"
    message = "Method not allowed."


@dataclass
class Caller:
    """Who presented which credential: `user` is the principal or human behind it,
    `credential` the row that authenticated (principal, admin token or scoped token)."""

    user: Any
    credential: Any

    @cached_property
    def actor(self) -> Actor:
        return actor_of_credential(self.user, self.credential)

    @cached_property
    def access(self) -> Access:
        return access_for(self.user)


@dataclass(frozen=True)
class Operation:
    """A plain view's OpenAPI description."""

    operation_id: str
    summary: str
    body: Body
    responses: Mapping[int, Mapping[str, Any]]
    tag: str = "tokens"


Handler = Callable[[HttpRequest, Caller, dict[str, Any]], tuple[int, dict[str, Any]]]
View = Callable[[HttpRequest], HttpResponse]


def bearer_post(
    allowed: Callable[[Caller], bool], operation: Operation
) -> Callable[[Handler], View]:
    """A POST endpoint for callers `allowed` admits; the handler gets the validated body
    and returns (status, payload). Responses carry `Cache-Control: no-store`."""

    def wrap(handler: Handler) -> View:
        @csrf_exempt  # bearer credentials only: no cookie to ride on
        @wraps(handler)
        def view(request: HttpRequest) -> HttpResponse:
            caller: Caller | None = None
            try:
                if request.method != "POST":
                    raise MethodNotAllowed()
                caller = authenticate(request)
                if not allowed(caller):
                    raise Forbidden()
                if isinstance(caller.user, ServicePrincipal):
                    check_rate(str(caller.user.id))
                status, payload = handler(request, caller, operation.body.clean(json_body(request)))
            except Exception as exc:
                return failure_response(request, exc, caller)
            return _json(status, payload, NO_STORE)

        view.openapi = operation  # type: ignore[attr-defined]
        return view

    return wrap


def authenticate(request: HttpRequest) -> Caller:
    try:
        found = identify(request)
    except AuthenticationFailed:
        raise Unauthenticated() from None
    if found is None:
        raise Unauthenticated()
    return Caller(*found)


def failure_response(request: HttpRequest, exc: Exception, caller: Caller | None) -> HttpResponse:
    failure = describe(exc)
    if failure.status == 401:
        failure.headers["WWW-Authenticate"] = 'Bearer realm="keyward"'
    if failure.status == 405:
        failure.headers["Allow"] = "POST"
    if failure.status == 401 and not getattr(exc, "audited", False):
        failure = unauthenticated(request, failure)
    elif needs_refusal_event(exc, failure):
        who = caller.actor if caller is not None else Actor.anonymous()
        audit_refusal(request, failure.status, actor=who, tenant=None)
    return _json(failure.status, failure.body(), failure.headers)


def _encode(value: Any) -> Any:
    """Datetimes as DRF renders them (ISO 8601, `Z` for UTC), UUIDs as strings."""
    if isinstance(value, datetime.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json(status: int, payload: Mapping[str, Any], headers: Mapping[str, str]) -> HttpResponse:
    content = json.dumps(payload, default=_encode, ensure_ascii=False, separators=(",", ":"))
    response = HttpResponse(content, status=status, content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response
