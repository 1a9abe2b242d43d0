"""The tracer provider and the instrumentations, started and stopped together."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from ops.tracing.scrub import ScrubbingSpanProcessor

logger = logging.getLogger("keyward.tracing")
DEFAULT_SERVICE_NAME = "keyward"
# Probes and scrapes, every few seconds on every pod: not traced unless configured otherwise.
DEFAULT_EXCLUDED_URLS = "healthz,readyz,metrics"
# Variables of the instrumentations that would record request or response headers (the
# caller's bearer token, a provider key, the Vault token) or arbitrary Django request
# attributes: refused, so that no configuration can put a credential into a span.
REFUSED_VARIABLES = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE",
    "OTEL_PYTHON_DJANGO_TRACED_REQUEST_ATTRS",
)
_PROVIDER_SEGMENT = re.compile(r"[a-z0-9_-]{1,32}")


@dataclass
class Tracing:
    provider: TracerProvider
    instrumentors: list[BaseInstrumentor] = field(default_factory=list)

    def stop(self) -> None:
        for instrumentor in reversed(self.instrumentors):
            instrumentor.uninstrument()
        self.provider.shutdown()

    def wrap_asgi(self, app: Any) -> Any:
        """A server span per request, named by method and provider (the rest of the path is
        the provider's), with no span per body chunk of a stream."""
        return OpenTelemetryMiddleware(
            app,
            default_span_details=_proxy_span_details,
            tracer_provider=self.provider,
            exclude_spans=["receive", "send"],
            http_capture_headers_server_request=[],
            http_capture_headers_server_response=[],
        )


def start(exporter: SpanExporter | None, *, register_global: bool) -> Tracing:
    """A tracer provider exporting scrubbed spans (to `exporter`, or over OTLP/HTTP as the
    OTEL_* variables say) and every instrumentation bound to it."""
    for name in REFUSED_VARIABLES:
        if os.environ.pop(name, None) is not None:
            logger.warning("%s is not honoured: spans never record headers", name)
    processor: SpanProcessor = (
        BatchSpanProcessor(OTLPSpanExporter())
        if exporter is None
        else SimpleSpanProcessor(exporter)
    )
    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(ScrubbingSpanProcessor(processor))
    if register_global:
        trace.set_tracer_provider(provider)
    tracing = Tracing(provider)
    excluded = (
        os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS")
        or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
        or DEFAULT_EXCLUDED_URLS
    )
    _instrument(tracing, DjangoInstrumentor(), excluded_urls=excluded)
    # Statement text only: values bound as parameters (a token's lookup id) are not recorded.
    _instrument(tracing, PsycopgInstrumentor(), capture_parameters=False, enable_commenter=False)
    _instrument(tracing, CeleryInstrumentor())  # type: ignore[no-untyped-call]
    _instrument(tracing, HTTPXClientInstrumentor())
    _instrument(tracing, RequestsInstrumentor())
    _instrument(tracing, URLLib3Instrumentor())
    _instrument(tracing, AioHttpClientInstrumentor())
    return tracing


def _instrument(tracing: Tracing, instrumentor: BaseInstrumentor, **options: Any) -> None:
    instrumentor.instrument(
        tracer_provider=tracing.provider, raise_exception_on_conflict=True, **options
    )
    tracing.instrumentors.append(instrumentor)


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them, with "keyward"
    as the service name when neither names one."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def _proxy_span_details(scope: dict[str, Any]) -> tuple[str, dict[str, str]]:
    prefix = "/api/v1/proxy/"
    provider = str(scope.get("path", "")).removeprefix(prefix).partition("/")[0]
    if not _PROVIDER_SEGMENT.fullmatch(provider):
        provider = "{provider}"
    route = f"{prefix}{provider}/{{path}}"
    return f"{scope.get('method', 'HTTP')} {route}", {"http.route": route}
