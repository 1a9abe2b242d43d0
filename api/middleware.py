"""Request plumbing shared by every endpoint: request ids, source addresses, body limits."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from api.errors import error_response
from core.context import Origin, bound_origin, new_request_id, well_formed_request_id
from core.logging import log_access

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def origin_of(request: HttpRequest) -> Origin:
    """The request's id (a well-formed X-Request-ID is kept) and source address."""
    incoming = request.META.get("HTTP_X_REQUEST_ID", "")
    request_id = incoming if well_formed_request_id(incoming) else new_request_id()
    return Origin(request_id=request_id, source_ip=client_ip(request))


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address, trusting exactly KEYWARD_TRUSTED_PROXY_COUNT proxy hops."""
    address = request.META.get("REMOTE_ADDR")
    hops = settings.TRUSTED_PROXY_COUNT
    if hops:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [p for p in forwarded if p]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


def route_of(request: HttpRequest) -> str:
    """The URL pattern the request matched (`api/v1/tenants/<slug:slug>`), or `-`."""
    match = request.resolver_match
    return f"/{match.route}" if match is not None and match.route else "-"


class RequestContextMiddleware:
    """Gives each request an id (reusing a well-formed X-Request-ID) and echoes it back;
    writes its access line; sets Content-Length on every response whose body is known."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        origin = origin_of(request)
        request_id = origin.request_id
        request.keyward_origin = origin  # type: ignore[attr-defined]
        with bound_origin(origin):
            response = self.get_response(request)
            log_access(request.method or "-", route_of(request), response.status_code, started)
        response["X-Request-ID"] = request_id
        if not response.streaming and not response.has_header("Content-Length"):
            # Lets a keep-alive client read the body without chunked framing.
            response["Content-Length"] = str(len(response.content))
        return response


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class RequestLineMiddleware:
    """Refuses a path or query string that holds control characters (NUL first of all) or
    bytes that are not UTF-8, with 400, before any view, filter or query sees them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        try:
            decoded = unquote_to_bytes(query.replace("+", " ")).decode("utf-8") if query else ""
        except UnicodeDecodeError:
            return error_response(400, "bad_request", "The query string is not valid UTF-8.")
        if CONTROL_CHARACTERS.search(request.path) or CONTROL_CHARACTERS.search(decoded):
            return error_response(400, "bad_request", "The URL holds control characters.")
        return self.get_response(request)


class BodySizeLimitMiddleware:
    """Refuses bodies above KEYWARD_MAX_BODY_BYTES with 413 before anything parses them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in _BODY_METHODS:
            limit = settings.MAX_BODY_BYTES
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return error_response(400, "bad_request", "Content-Length is not a number.")
            if length > limit:
                return error_response(
                    413, "body_too_large", f"The request body exceeds {limit} bytes."
                )
        return self.get_response(request)
