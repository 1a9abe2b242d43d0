"""Neither token strings nor provider keys appear in logs, audit events or the database."""

from __future__ import annotations

import logging

import pytest

from audit.models import AuditEvent
from tests.factories import client
from tests.kms.test_canary import assert_absent, pg_dump


@pytest.mark.slow
def test_tokens_and_keys_leak_nowhere(committed_world, caplog, capfd, settings):
    caplog.set_level(logging.DEBUG)
    world = committed_world
    bodies: list[str] = []
    tokens = []
    for ask in ({}, {"max_uses": 1}, {"scopes": ["proxy"]}):
        response = world.issue(**ask)
        bodies.append(response.content.decode())
        tokens.append(response.json()["token"])
    release, single, proxy_only = tokens
    for token in (release, single, single, proxy_only):
        bodies.append(client(token).post("/api/v1/exchange").content.decode())
    api = client(world.secret)
    for token in tokens:
        bodies.append(
            api.post("/api/v1/tokens/introspect", {"token": token}, format="json").content.decode()
        )
    bodies.append(
        client(world.stranger_secret)
        .post("/api/v1/tokens/introspect", {"token": release}, format="json")
        .content.decode()
    )
    bodies.append(
        api.post("/api/v1/tokens/revoke", {"token": release}, format="json").content.decode()
    )
    bodies.append(client(release).post("/api/v1/exchange").content.decode())
    logs = caplog.text + "\n".join(capfd.readouterr())
    events = repr(list(AuditEvent.objects.values()))
    dump = pg_dump()
    assert "credential.released" in dump
    released = [b for b in bodies if world.secret_a in b]
    assert len(released) == 2, "the key appears only in the responses of exchange"
    for secret in (*tokens, world.secret, world.stranger_secret):
        assert_absent(secret, logs, "the logs")
        assert_absent(secret, events, "the audit log")
        assert_absent(secret, dump, "pg_dump")
    assert_absent(world.secret_a, logs + events + dump, "logs, audit or pg_dump")
    for token in tokens:
        issued_body = [b for b in bodies if token in b]
        assert len(issued_body) == 1, "a token string appears only in the response that issued it"
