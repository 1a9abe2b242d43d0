"""Request metrics: the WSGI API through a middleware, the ASGI proxy through two hooks it
calls (kept here, so that the proxy's latency-sensitive module barely changes). Routes are
labelled by their template (`/api/v1/tenants/<tenant_slug:slug>/keys`), never by the path,
which holds slugs, ids and, on a mistyped URL, anything at all."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.http import HttpRequest, HttpResponse

from api.middleware import route_of
from core import metrics

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


def route_label(request: HttpRequest) -> str:
    """The template of the URL pattern that matched, as access lines name it, or `unmatched`."""
    route = route_of(request)
    return metrics.UNMATCHED if route == "-" else route


class RequestMetricsMiddleware:
    """Counts every answer by route, method and status, and times it (to the response's
    headers: a streamed body is not waited for)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        metrics.observe_request(route_label(request), request.method, response.status_code, elapsed)
        return response


class ProxyObserver:
    """Wraps the proxy's `send` to learn the status it answered, then counts the request
    once its answer is complete (a stream is timed to its last chunk)."""

    def __init__(self, send: Send, method: str, route: str) -> None:
        self._send = send
        self.method = method
        self.route = route
        self.status = 499  # none sent: the client went away, or the call failed first
        self.started = time.perf_counter()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)

    def done(self) -> None:
        elapsed = time.perf_counter() - self.started
        metrics.observe_request(self.route, self.method, self.status, elapsed)


def observe_proxy_call(provider: str, upstream_status: int | None) -> None:
    """Count a call the proxy forwarded, by the class of the provider's answer."""
    metrics.count_proxy_call(provider, upstream_status)
