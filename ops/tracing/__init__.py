"""Tracing with OpenTelemetry: on when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, off otherwise.

Each process calls `setup()` once at start-up: the WSGI and ASGI applications when they are
loaded, a Celery worker in each pool process, beat when it starts. Off, that call reads the
environment and nothing else: OpenTelemetry is not even imported. On, Django requests,
psycopg statements, Celery tasks and the HTTP clients (httpx for provider checks, requests
and urllib3 under hvac and the Vault reads, aiohttp for the proxy's upstream calls and
Vault's reads on the event loop) are traced and exported over OTLP/HTTP, with the standard
OTEL_* variables honoured, save those that would record headers or request attributes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from ops.tracing.instrument import Tracing

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_active: Tracing | None = None


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process should trace: an OTLP endpoint is set, and the SDK is not
    disabled (OTEL_SDK_DISABLED)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def setup(exporter: SpanExporter | None = None, *, register_global: bool = True) -> Tracing | None:
    """Start tracing in this process when it is enabled (or when an exporter is given, as
    tests do), once; returns the running tracing, or None when off."""
    global _active
    if _active is None and (exporter is not None or enabled()):
        # Imported here so that a process without tracing never loads OpenTelemetry.
        from ops.tracing.instrument import start

        _active = start(exporter, register_global=register_global)
    return _active


def shutdown() -> None:
    """Stop tracing in this process: every instrumentation removed, pending spans exported."""
    global _active
    if _active is not None:
        _active.stop()
        _active = None


def traced_asgi(app: Any) -> Any:
    """`app` with a server span around each HTTP request when tracing is on; `app` itself
    otherwise."""
    return app if _active is None else _active.wrap_asgi(app)
