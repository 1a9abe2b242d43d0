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
from django.db import connection

from audit.models import AuditEvent
from tests import bao as servers
from tests import pg
from tests import provider_stub as docs


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

    assert any(first in s.headers.get("authorization", "") for s in stub.seen), (
        "the canary did reach the provider"
    )
    logs = caplog.text + "\n".join(capfd.readouterr())
    events = repr(list(AuditEvent.objects.values()))
    dump = pg_dump()
    assert "key.created" in dump and len(dump) > 1000
    for secret in (first, second):
        assert_absent(secret, logs, "the logs")
        assert_absent(secret, b"\n".join(bodies).decode(), "an HTTP response")
        assert_absent(secret, events, "the audit log")
        assert_absent(secret, dump, "pg_dump")
