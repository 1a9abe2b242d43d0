"""A canary key through every key endpoint and failure path appears nowhere but the secret
store: not in logs, HTTP bodies, audit events or a pg_dump (security.md rule 1)."""

from __future__ import annotations

import base64
import logging
import secrets
import string
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from django.db import connection

from audit.models import AuditEvent
from core.logging import JsonFormatter
from kms import jobs
from notify import webhooks
from notify.models import WebhookDelivery
from tests import bao as servers
from tests import pg
from tests import provider_stub as docs
from tests.provider_stub import ProviderStub


def as_json_lines(records: list[logging.LogRecord]) -> str:
    """The captured records as the JSON log format writes them (KEYWARD_LOG_FORMAT=json)."""
    return "\n".join(JsonFormatter().format(record) for record in records)


def canary() -> str:
    body = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    return f"sk-proj-CANARY_{body}-x"


def forms(secret: str) -> list[str]:
    """The raw, URL-encoded and base64 spellings (at every alignment) of a secret."""
    raw = secret.encode()
    spelled = {secret, quote(secret, safe=""), quote(secret)}
    for pad in (b"", b"x", b"xx"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(pad + raw).decode()
            skip = {b"": 0, b"x": 2, b"xx": 3}[pad]
            spelled.add(encoded[skip : skip + 4 * (len(raw) // 3) - 4])
    return sorted(spelled)


def assert_absent(secret: str, haystack: str, where: str) -> None:
    for form in forms(secret):
        assert form not in haystack, f"the canary appears in {where} as {form[:12]}..."


def pg_dump() -> str:
    """Everything the database holds: `pg_dump`, or on SQLite the SQL dump and the raw bytes
    of the database file and its write-ahead log."""
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        dump = "\n".join(connection.connection.iterdump())
        raw = b"".join(
            Path(name).read_bytes()
            for name in (pg.test_db_name(), pg.test_db_name() + "-wal")
            if Path(name).exists()
        )
        return dump + "\n" + raw.decode("latin-1")
    dsn = pg._dsn(pg.test_db_name())
    result = subprocess.run(
        ["pg_dump", "--data-only", dsn], capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("store_config", ["local", "vault"], indirect=True)
def test_a_canary_key_leaks_nowhere(
    committed_actors, default_store, provider_stub, settings, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    actors, stub = committed_actors, provider_stub
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    first, second = canary(), canary()
    bodies: list[bytes] = []

    def call(method: str, url: str, body: dict | None = None, status: int | None = None):
        response = (
            getattr(api, method)(url, body, format="json")
            if body is not None
            else getattr(api, method)(url)
        )
        bodies.append(response.content + repr(sorted(response.items())).encode())
        if status is not None:
            assert response.status_code == status, response.content
        return response

    keys_url = f"/api/v1/tenants/{slug}/keys"
    onboard = {"provider": "openai", "label": "canary", "secret": first}
    # failure paths first: provider says invalid, provider down, bad input, store down
    stub.answer(401, docs.OPENAI_INVALID)
    call("post", keys_url, onboard, 422)
    stub.answer(503, {"error": {"message": "down"}})
    call("post", keys_url, onboard, 503)
    stub.answer(200)
    call("post", keys_url, {**onboard, "secret": " " + first}, 400)
    call("post", keys_url, {**onboard, "provider": "anthropic"}, 400)
    call("post", keys_url, {**onboard, "provider": first}, 400)
    stored = settings.SECRET_STORES
    settings.SECRET_STORES = {
        "default": {
            "backend": "vault",
            "addr": f"http://127.0.0.1:{servers.free_port()}",
            "token": "t",
            "timeout": 0.5,
        }
    }
    call("post", keys_url, onboard, 503)
    settings.SECRET_STORES = stored
    # the happy paths
    key = call("post", keys_url, onboard, 201).json()
    url = f"{keys_url}/{key['id']}"
    call("post", keys_url, onboard, 409)
    call("get", keys_url, status=200)
    call("get", url, status=200)
    call("post", f"{url}/validate", status=200)
    stub.answer(401, docs.OPENAI_INVALID)
    call("post", f"{url}/validate", status=200)
    call("post", f"{url}/rotate", {"secret": second}, 422)
    stub.answer(200)
    call("post", f"{url}/rotate", {"secret": second, "grace_period_seconds": 0}, 200)
    call("post", f"{url}/rotate", {"secret": first}, 409)
    call("get", f"{url}/validations", status=200)
    call("delete", url, status=204)
    call("get", "/metrics", status=200)  # the counters of every call above

    assert any(first in s.headers.get("authorization", "") for s in stub.seen), (
        "the canary did reach the provider"
    )
    logs = caplog.text + "\n".join(capfd.readouterr()) + as_json_lines(caplog.records)
    events = repr(list(AuditEvent.objects.values()))
    dump = pg_dump()
    assert "key.created" in dump and len(dump) > 1000
    for secret in (first, second):
        assert_absent(secret, logs, "the logs")
        assert_absent(secret, b"\n".join(bodies).decode(), "an HTTP response")
        assert_absent(secret, events, "the audit log")
        assert_absent(secret, dump, "pg_dump")


RUN = 8  # security.md rule 18: no run of 8 or more characters of the key, in any spelling


def assert_no_run(secret: str, haystack: str, where: str) -> None:
    """No run of RUN characters of any spelling of `secret` is in `haystack`; runs of the
    raw and URL-encoded spellings that lie wholly in the canary's fixed prefix or suffix are
    left out (other text may share them)."""
    fixed = ("sk-proj-CANARY_", "-x")
    for form in forms(secret):
        for i in range(len(form) - RUN + 1):
            window = form[i : i + RUN]
            if any(window in part for part in fixed):
                continue
            assert window not in haystack, f"a run of the canary is in {where}: {window}"


def _echo(secret: str) -> dict:
    """An error that writes the key back in part, in base64 and URL-encoded."""
    encoded = base64.b64encode(secret.encode()).decode()
    return {
        "error": {
            "message": f"Incorrect API key provided: {secret[4:39]} (b64 {encoded},"
            f" url {quote(secret, safe='')}).",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }


def redis_dump() -> str:

    connection = redis.Redis.from_url(settings.REDIS_URL)
    out = []
    for key in connection.scan_iter(count=1000):
        out.append(repr(key))
        if connection.type(key) == b"string":
            out.append(repr(connection.get(key)))
    return "\n".join(out)


@pytest.mark.slow
def test_a_provider_that_echoes_the_canary_leaves_no_run_of_it_anywhere(
    committed_actors, provider_stub, settings, caplog, capfd
):
    """Onboarding, validation, rotation, the scheduled check and its webhook, each answered
    by a provider that echoes the key: the answers, the logs, the audit log, the webhook
    bodies, the database and Redis hold no run of it."""

    caplog.set_level(logging.DEBUG)
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    receiver = ProviderStub()
    settings.WEBHOOKS = [{"url": receiver.url + "/hook", "secret": "w" * 20}]
    api, slug = committed_actors.as_("alice"), committed_actors.tenant_a.slug
    first, second = canary(), canary()
    bodies: list[str] = []

    def call(method: str, url: str, body: dict | None = None) -> dict:
        response = getattr(api, method)(url, body, format="json")
        bodies.append(response.content.decode() + repr(sorted(response.items())))
        return response.json() if response.content else {}

    keys_url = f"/api/v1/tenants/{slug}/keys"
    try:
        provider_stub.answer(401, _echo(first))
        assert call("post", keys_url, {"provider": "openai", "label": "c", "secret": first})[
            "error"
        ]["code"]
        provider_stub.answer(200)
        key = call("post", keys_url, {"provider": "openai", "label": "c", "secret": first})
        for status in (429, 503, 401):  # a transient answer first, then the refusal
            provider_stub.answer(status, _echo(first))
            call("post", f"{keys_url}/{key['id']}/validate")
        call("get", f"{keys_url}/{key['id']}/validations")
        provider_stub.answer(401, _echo(second))
        call("post", f"{keys_url}/{key['id']}/rotate", {"secret": second})
        provider_stub.answer(200)
        call("post", f"{keys_url}/{key['id']}/rotate", {"secret": second})
        provider_stub.answer(401, _echo(second))
        assert jobs.check_key(key["id"]) is not None, "the scheduled check ran"
        receiver.answer(200, {})
        for delivery in WebhookDelivery.objects.all():
            webhooks.deliver(delivery.pk)
        assert receiver.seen, "the key.invalid webhook was sent"
        metrics = api.get("/metrics")
        bodies.append(metrics.content.decode())
        assert b"keyward_provider_checks_total" in metrics.content
        sent = "\n".join(repr(seen) for seen in receiver.seen)
    finally:
        receiver.close()

    echoed = [s for s in provider_stub.seen if first in s.headers.get("authorization", "")]
    assert echoed, "the canary did reach the provider"
    logs = caplog.text + "\n".join(capfd.readouterr()) + as_json_lines(caplog.records)
    events = repr(list(AuditEvent.objects.values()))
    assert "key.validated" in events or "key.invalid" in events
    places = {
        "an HTTP response": "\n".join(bodies),
        "the logs": logs,
        "the audit log": events,
        "a webhook body": sent,
        "pg_dump": pg_dump(),
        "Redis": redis_dump(),
    }
    for secret in (first, second):
        for where, haystack in places.items():
            assert_no_run(secret, haystack, where)
