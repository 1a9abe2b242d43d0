"""Tracing (OpenTelemetry): off without OTEL_EXPORTER_OTLP_ENDPOINT, on with it in every
entry point, and no span carries a secret: a canary provider key, a `kwp_` secret or a
`kwt_` token appears in no span's name, attribute, event or status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.db import connections
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from api.proxy import application as proxy_application
from kms.tasks import check_key
from ops import tracing
from ops.tracing.scrub import REDACTED, scrub_attributes, scrub_text, scrubbed
from tenants.actions import do_create_grant
from tests.conftest import USES_POSTGRES
from tests.factories import client, make_principal
from tests.kms.test_canary import assert_absent, canary
from tests.kms.world import SYSTEM
from tests.proxy.test_native import bearer
from tests.proxy.test_proxy import COMPLETION

ROOT = Path(__file__).resolve().parent.parent.parent
TOKEN = "kwt_" + "A1b2C3d4E5f6" + "x" * 43 + "Zz9Yy8"


# -- the scrubber ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "secret",
    [
        TOKEN,
        "kwp_" + "Q" * 61,
        "kwa_" + "r" * 61,
        "sk-proj-" + "k" * 40,
        "sk-ant-api03-" + "k" * 40,
        "AIza" + "g" * 35,
        "gsk_" + "q" * 40,
        "hvs." + "v" * 24,
        "s." + "V" * 24,
        "0123456789abcdef0123456789ABCDEF",  # a bare 32-character key (Azure)
    ],
)
def test_the_scrubber_replaces_every_credential_shape_wherever_it_stands(secret):
    text = f"failed for {secret}, retrying"
    assert scrub_text(text) == f"failed for {REDACTED}, retrying"
    assert scrub_text(f"Bearer {secret}") == REDACTED
    assert scrub_attributes({"a": text, "b": (text, "ok"), "n": 3}) == {
        "a": f"failed for {REDACTED}, retrying",
        "b": (f"failed for {REDACTED}, retrying", "ok"),
        "n": 3,
    }


def test_the_scrubber_keeps_what_is_no_credential():
    for text in (
        'SELECT "kms_scopedtoken"."id" FROM "kms_scopedtoken" WHERE "key_id" = %s',
        "POST api/v1/tenants/<tenant_slug:slug>/keys/<uuid:key_id>/validate",
        "keyward.kms.schedule_key_checks",
        "/v1/secret/data/keyward/8a6e0f4c-5b1d-4d0e-9f3a-2c7b1e0d9a11/3fa85f64-5717",
    ):
        assert scrub_text(text) == text


def test_the_scrubber_drops_query_strings_headers_and_statement_parameters():
    attributes = {
        "url.full": f"https://api.example.com/v1/models?key={TOKEN}&x=1",
        "http.url": "http://127.0.0.1:8200/v1/secret/data/p?version=2",
        "http.target": "/api/v1/proxy/google/v1beta/models?key=AIzaSomething",
        "url.query": "key=AIzaSomething",
        "http.request.header.authorization": ("Bearer x",),
        "http.response.header.set_cookie": ("c",),
        "db.statement.parameters": "('lookup',)",
        "db.statement": "SELECT 1",
    }
    assert scrub_attributes(attributes) == {
        "url.full": "https://api.example.com/v1/models",
        "http.url": "http://127.0.0.1:8200/v1/secret/data/p",
        "http.target": "/api/v1/proxy/google/v1beta/models",
        "db.statement": "SELECT 1",
    }


def test_a_scrubbed_span_keeps_its_identity_and_loses_the_secret_in_every_part():
    span = ReadableSpan(
        name=f"GET /t/{TOKEN}",
        attributes={"note": TOKEN, "http.status_code": 401},
        events=[Event("exception", {"exception.message": f"refused {TOKEN}"})],
        status=Status(StatusCode.ERROR, f"refused {TOKEN}"),
        start_time=1,
        end_time=2,
    )
    clean = scrubbed(span)
    assert TOKEN not in clean.to_json()
    assert clean.name == f"GET /t/{REDACTED}"
    assert dict(clean.attributes or {}) == {"note": REDACTED, "http.status_code": 401}
    assert clean.status.status_code is StatusCode.ERROR
    assert (clean.start_time, clean.end_time) == (1, 2)


# -- on and off, in each entry point -------------------------------------------------------
PROBE = """
import json, os, sys
import {modules}
import django
django.setup()  # as Celery's Django fixup does when a worker starts
from celery.signals import worker_process_init
worker_process_init.send(sender=None)  # as in each pool process of a worker
from django.conf import settings
from api.proxy import application as proxy_application
from kms.tasks import check_key
from ops import tracing
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
celery = loaded and __import__("opentelemetry.instrumentation.celery").instrumentation.celery
asgi = sys.modules.get("settings.asgi")
print(json.dumps({{
    "loaded": loaded,
    "active": tracing._active is not None,
    "middleware": [m for m in settings.MIDDLEWARE if "opentelemetry" in m],
    "proxy": type(asgi.proxy).__name__ if asgi else None,
    "celery": bool(celery and celery.CeleryInstrumentor().is_instrumented_by_opentelemetry),
    "env": [k for k in os.environ if "CAPTURE_HEADERS" in k],
}}))
"""


def _probe(modules: str, **environ: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(environ)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(modules=modules)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_without_an_endpoint_nothing_is_imported_or_instrumented():
    seen = _probe("settings.wsgi, settings.asgi, settings.celery")
    assert seen["loaded"] == [] and not seen["active"] and seen["middleware"] == []
    assert seen["proxy"] == "Proxy" and not seen["celery"]


ON = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "authorization,x-api-key",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": "x-vault-token",
}


@pytest.mark.slow
def test_with_an_endpoint_the_web_and_proxy_apps_trace_and_refuse_header_capture():
    seen = _probe("settings.asgi, settings.wsgi", **ON)
    assert seen["active"] and seen["env"] == []
    assert seen["middleware"], "Django's requests are traced"
    assert seen["proxy"] == "OpenTelemetryMiddleware"


@pytest.mark.slow
def test_with_an_endpoint_a_worker_process_traces_its_tasks():
    seen = _probe("settings.celery", **ON)
    assert seen["active"] and seen["celery"] and seen["env"] == []


def test_the_sdk_switch_turns_tracing_off():
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.enabled({})
    assert not tracing.enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
    )


# -- a traced scenario ---------------------------------------------------------------------
@pytest.fixture
def traced() -> Iterator[tuple[InMemorySpanExporter, InMemorySpanExporter]]:
    """Tracing in this process, exported to memory twice: scrubbed, as the service exports
    it, and raw, as the instrumentations recorded it. Removed afterwards."""
    exported, raw = InMemorySpanExporter(), InMemorySpanExporter()
    running = tracing.setup(exported, register_global=False)
    assert running is not None
    running.provider.add_span_processor(SimpleSpanProcessor(raw))
    connections.close_all()  # new connections, through the instrumented psycopg
    try:
        yield exported, raw
    finally:
        tracing.shutdown()
        connections.close_all()


def _scopes(spans: tuple[ReadableSpan, ...]) -> set[str]:
    return {
        s.instrumentation_scope.name.rpartition(".")[2] for s in spans if s.instrumentation_scope
    }


@pytest.mark.slow
def test_issue_exchange_and_a_provider_check_are_traced_without_a_secret(
    committed_actors, bao, provider_stub, settings, traced
):
    exported, raw = traced
    settings.SECRET_STORES = {
        "default": bao.store_config(path_prefix="keyward-trace-" + os.urandom(4).hex())
    }
    actors, key = committed_actors, canary()
    slug = actors.tenant_a.slug
    onboarded = actors.as_("alice").post(
        f"/api/v1/tenants/{slug}/keys",
        {"provider": "openai", "label": "traced", "secret": key},
        format="json",
    )
    assert onboarded.status_code == 201, onboarded.content
    principal, principal_secret = make_principal()
    do_create_grant(principal, actors.tenant_a, "openai", ["release"], 900, actor=SYSTEM)
    issued = client(principal_secret).post(
        "/api/v1/tokens",
        {"tenant": slug, "provider": "openai", "scopes": ["release"]},
        format="json",
    )
    assert issued.status_code == 201, issued.content
    token = issued.json()["token"]
    released = client(token).post("/api/v1/exchange")
    assert released.status_code == 200 and released.json()["api_key"] == key
    jobs_run = check_key.apply(args=[onboarded.json()["id"]])  # the task, in this process
    assert jobs_run.successful(), jobs_run.traceback
    assert client().get("/healthz").status_code == 200
    checked = actors.as_("alice").post(
        f"/api/v1/tenants/{slug}/keys/{onboarded.json()['id']}/validate"
    )
    assert checked.status_code == 200, checked.content

    spans = exported.get_finished_spans()
    expected = {"django", "celery", "httpx", "requests", "urllib3"} | (
        {"psycopg"} if USES_POSTGRES else set()
    )
    assert expected <= _scopes(spans), _scopes(spans)
    names = {s.name for s in spans}
    assert {"POST api/v1/tokens", "POST api/v1/exchange"} <= names
    assert not any("healthz" in name for name in names), "probes are not traced"
    assert any(
        s.attributes
        and "/v1/secret/data/"
        in str(s.attributes.get("http.url", s.attributes.get("url.full", "")))
        for s in spans
    ), "the Vault read"
    if USES_POSTGRES:
        statements = [str(s.attributes.get("db.statement", "")) for s in spans if s.attributes]
        assert any("kms_scopedtoken" in text for text in statements)
    for where, found in (("an exported span", exported), ("a recorded span", raw)):
        text = "\n".join(s.to_json() for s in found.get_finished_spans())
        for secret in (key, principal_secret, token, actors.tokens["alice"], bao.token):
            assert_absent(secret, text, where)


@pytest.fixture
def proxied_world(committed_world, provider_stub, settings, monkeypatch):
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    settings.PROVIDER_BASE_URLS = {"openai": provider_stub.url + "/v1"}
    provider_stub.answer(200, COMPLETION)
    return committed_world


@pytest.mark.slow
def test_a_proxied_call_is_traced_by_provider_without_the_key_or_the_token(proxied_world, traced):
    exported, raw = traced
    token = proxied_world.token(scopes=["proxy"])
    app = tracing.traced_asgi(proxy_application)
    path = "/api/v1/proxy/openai/chat/completions"

    async def calls() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://k") as client:
                answers = [
                    await client.post(path, json={"model": "gpt-4o"}, headers=bearer(token)),
                    await client.get(f"{path}?key={token}", headers={"x-api-key": token}),
                ]
                return [a.status_code for a in answers]
        finally:
            await proxy_application.aclose()

    assert async_to_sync(calls)() == [200, 400]
    spans = exported.get_finished_spans()
    server = [s for s in spans if s.name.startswith(("POST /api/v1/proxy", "GET /api/v1/proxy"))]
    assert {s.name for s in server} == {
        "POST /api/v1/proxy/openai/{path}",
        "GET /api/v1/proxy/openai/{path}",
    }
    assert "aiohttp_client" in _scopes(spans), _scopes(spans)
    text = "\n".join(s.to_json() for s in spans)
    for secret in (proxied_world.secret_a, token):
        assert_absent(secret, text, "an exported span")
    # The token sent in a query string was recorded, and the scrubber took it out.
    assert token in "\n".join(s.to_json() for s in raw.get_finished_spans())
