"""The counters and histograms every process adds to (README: Operations > Metrics).

prometheus_client runs in multiprocess mode: each process (granian worker, Celery worker,
sequencer) writes its samples to memory-mapped files in `PROMETHEUS_MULTIPROC_DIR`, which the
settings set from `KEYWARD_METRICS_DIR` before any project module imports this one, and
`/metrics` sums the files of every process. No gauge is kept in the files (the queue depth is
read when scraped), so the files of a process that has exited hold only counters, which stay
true; the directory is emptied when the service starts (`manage.py serve`, the container
entrypoint).

Labels hold bounded, non-secret values only: route templates, methods, status codes, provider
names, fixed outcome names. Never a path, a token, a tenant, a key label or a secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    raise ImproperlyConfigured(
        "core.metrics was imported before the settings set PROMETHEUS_MULTIPROC_DIR"
    )

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Up to two minutes: a proxied stream is timed until its last chunk.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

REQUESTS = Counter(
    "keyward_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "keyward_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["route", "method"],
    buckets=BUCKETS,
)
TOKENS_ISSUED = Counter(
    "keyward_tokens_issued",
    "Scoped token requests: `issued`, or the refusal's error code.",
    ["outcome"],
)
EXCHANGES = Counter(
    "keyward_exchanges",
    "Exchanges of a token for its key: `released`, or the refusal's error code.",
    ["outcome"],
)
PROXY_CALLS = Counter(
    "keyward_proxy_calls",
    "Calls the proxy forwarded, by provider and the class of the provider's status "
    "(`2xx` ... `5xx`, or `none` when no answer came).",
    ["provider", "status_class"],
)
PROVIDER_CHECKS = Counter(
    "keyward_provider_checks",
    "Key checks against a provider, by provider and outcome.",
    ["provider", "result"],
)
WEBHOOK_FAILURES = Counter(
    "keyward_webhook_delivery_failures",
    "Webhook attempts that failed: `retrying`, or `failed` once out of attempts.",
    ["outcome"],
)


def method_label(method: str | None) -> str:
    """The request method, or `other` for any method outside the fixed set."""
    return method if method in METHODS else "other"


# The labelled children of the request metrics, kept: `labels()` costs as much as the
# increment itself, on every request. The label sets are bounded, and so is this.
_request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(route: str, method: str | None, status: int, seconds: float) -> None:
    """Count one answered request and its duration."""
    verb = method_label(method)
    children = _request_children.get((route, verb, status))
    if children is None:
        children = (REQUESTS.labels(route, verb, str(status)), REQUEST_SECONDS.labels(route, verb))
        _request_children[(route, verb, status)] = children
    children[0].inc()
    children[1].observe(seconds)


def count_proxy_call(provider: str, upstream_status: int | None) -> None:
    status_class = f"{upstream_status // 100}xx" if upstream_status else "none"
    PROXY_CALLS.labels(provider, status_class).inc()


def exposition() -> bytes:
    """The text exposition of the samples of every process that wrote to the directory."""
    return generate_latest(_registry())


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def serve(port: int) -> None:
    """Serve the exposition on `port` from a thread (a Celery worker, which has no web
    server of its own)."""
    start_http_server(port, registry=_registry())


def process_exited(pid: int) -> None:
    """Forget the per-process gauges of an exited process (there are none today)."""
    mark_process_dead(pid)  # type: ignore[no-untyped-call]


def wipe(directory: Path) -> None:
    """Remove the sample files of earlier runs; call it before any process writes."""
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)
