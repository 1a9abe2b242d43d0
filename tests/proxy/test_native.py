"""The proxy's checks on native async I/O (PostgreSQL through psycopg's asyncio pool,
Redis through redis.asyncio), and the rules that must hold whichever path a call takes,
under concurrency. Data is committed, since the pool's connections are not the test's;
on SQLite the same tests run the synchronous path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext

from api.proxy import application
from audit.models import AuditEvent
from core import asql
from kms.actions import keys
from kms.actions import proxy as proxy_actions
from kms.models import ScopedToken
from tenants import credentials
from tests import pg
from tests.kms.test_canary import assert_no_run
from tests.kms.world import SYSTEM
from tests.proxy.test_proxy import COMPLETION

T = TypeVar("T")
MODELS = "/api/v1/proxy/openai/models"


def run(calls: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """`calls` against the proxy application on one event loop, whose pool is closed
    at the end."""

    async def go() -> T:
        transport = httpx.ASGITransport(app=application)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://k") as client:
                return await calls(client)
        finally:
            await application.aclose()

    return async_to_sync(go)()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def proxied(
    committed_world: Any, provider_stub: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Any:
    # Connections of pool threads close when their work is done, not a minute later, so
    # that none outlives the test database.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    settings.PROVIDER_BASE_URLS = {"openai": provider_stub.url + "/v1"}
    provider_stub.answer(200, COMPLETION)
    return committed_world


def concurrently(token: str, n: int) -> list[int]:
    async def calls(client: httpx.AsyncClient) -> list[int]:
        answers = await asyncio.gather(
            *(client.get(MODELS, headers=bearer(token)) for _ in range(n))
        )
        return sorted(a.status_code for a in answers)

    return run(calls)


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_plain_call_runs_no_statement_on_djangos_connection(proxied, provider_stub):
    token = proxied.token(scopes=["proxy"])
    run(lambda client: client.get(MODELS, headers=bearer(token)))  # notes the first use
    with CaptureQueriesContext(connection) as queries:
        answer = run(lambda client: client.get(MODELS, headers=bearer(token)))
    assert answer.status_code == 200, answer.text
    assert len(queries) == 0, [q["sql"] for q in queries]
    events = list(AuditEvent.objects.filter(action="proxy.request").order_by("occurred_at"))
    assert [e.details["upstream_status"] for e in events] == [200, 200]
    assert events[-1].details["key_version"] == proxied.key_a.current_version
    assert provider_stub.seen[-1].headers["authorization"] == f"Bearer {proxied.secret_a}"


def test_max_uses_holds_under_concurrency(proxied, provider_stub):
    token = proxied.token(scopes=["proxy"], max_uses=5)
    statuses = concurrently(token, 20)
    assert statuses == [200] * 5 + [401] * 15
    assert len(provider_stub.seen) == 5
    assert ScopedToken.objects.get().uses == 5
    assert AuditEvent.objects.filter(action="proxy.request").count() == 5


def test_the_rate_limit_holds_under_concurrency(proxied, provider_stub, settings):
    token = proxied.token(scopes=["proxy"])
    settings.RATE_LIMIT = (6, 86400)  # a window of its own: the issue above is not in it
    statuses = concurrently(token, 15)
    assert statuses == [200] * 6 + [429] * 9
    assert len(provider_stub.seen) == 6


@pytest.mark.parametrize("revoke", ["token", "key", "grant"])
def test_revoking_the_token_its_key_or_its_grant_stops_the_next_call(
    proxied, provider_stub, revoke
):
    token = proxied.token(scopes=["proxy"])

    async def calls(client: httpx.AsyncClient) -> list[int]:
        first = await client.get(MODELS, headers=bearer(token))
        await asql.in_thread(proxied.revoke)(revoke)
        second = await client.get(MODELS, headers=bearer(token))
        return [first.status_code, second.status_code]

    assert run(calls) == [200, 401]
    assert len(provider_stub.seen) == 1


def test_a_call_after_a_rotation_carries_the_new_key(proxied, provider_stub):
    """The secret read begun before the token is checked (from where the last call of the
    token found its key) is used only when the key is still at that version."""
    token = proxied.token(scopes=["proxy"])
    rotated = "sk-rotated-" + "r" * 40

    async def calls(client: httpx.AsyncClient) -> list[int]:
        # The first call notes the token's first use (the synchronous path); the second
        # is the plain case, which notes where the key was found.
        before = [await client.get(MODELS, headers=bearer(token)) for _ in range(2)]
        await asql.in_thread(keys.do_rotate_key)(
            proxied.key_a, secret=rotated, grace_period_seconds=3600, validate=False, actor=SYSTEM
        )
        after = await client.get(MODELS, headers=bearer(token))
        return [answer.status_code for answer in (*before, after)]

    assert run(calls) == [200, 200, 200]
    sent = [seen.headers["authorization"] for seen in provider_stub.seen]
    assert sent == [f"Bearer {proxied.secret_a}"] * 2 + [f"Bearer {rotated}"]
    versions = AuditEvent.objects.filter(action="proxy.request").order_by("occurred_at")
    assert [e.details["key_version"] for e in versions] == [1, 1, 2]


def test_a_known_token_with_a_wrong_secret_is_refused_and_sends_nothing(proxied, provider_stub):
    token = proxied.token(scopes=["proxy"])
    parsed = credentials.parse(token)
    assert parsed is not None
    forged = credentials.spell(parsed.prefix, parsed.key_id, "A" * credentials.SECRET_LEN)

    async def calls(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get(MODELS, headers=bearer(t)) for t in (token, token, forged)]

    answers = run(calls)
    assert [a.status_code for a in answers] == [200, 200, 401]
    assert len(provider_stub.seen) == 2
    for refused in answers[2:]:
        assert proxied.secret_a not in refused.text
        assert refused.headers["x-keyward-refusal"] == "unauthenticated"


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_only_the_tokens_own_secret_begins_an_early_read(proxied, provider_stub):
    """A lookup id is not secret (audit events name it): presented with any other secret,
    it must not make Keyward read the key from the store."""
    token = proxied.token(scopes=["proxy"])
    run(lambda client: client.get(MODELS, headers=bearer(token)))  # notes the first use
    run(lambda client: client.get(MODELS, headers=bearer(token)))  # the plain case: a hint
    parsed = credentials.parse(token)
    assert parsed is not None
    forged = credentials.parse(
        credentials.spell(parsed.prefix, parsed.key_id, "A" * credentials.SECRET_LEN)
    )
    assert forged is not None

    async def begun(presented: credentials.Parsed) -> bool:
        where, read = proxy_actions.begin_read(presented)
        if read is not None:
            assert await read == proxied.secret_a and where is not None
        return read is not None

    assert async_to_sync(begun)(parsed) is True
    assert async_to_sync(begun)(forged) is False
    answer = run(lambda client: client.get(MODELS, headers=bearer(forged.plaintext)))
    assert answer.status_code == 401
    assert async_to_sync(begun)(parsed) is False, "a refused presentation forgets the hint"


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_no_call_starts_while_the_application_role_may_not_write_the_audit_log(
    proxied, provider_stub
):
    token = proxied.token(scopes=["proxy"], max_uses=3)
    with pg.connect(autocommit=True) as admin:
        admin.execute(f"REVOKE INSERT ON audit_event FROM {pg.APP_ROLE}")
        try:
            refused = run(lambda client: client.get(MODELS, headers=bearer(token)))
        finally:
            admin.execute(f"GRANT INSERT ON audit_event TO {pg.APP_ROLE}")
    assert refused.status_code == 503, refused.text
    assert refused.headers["x-keyward-refusal"] == "audit_unavailable"
    assert provider_stub.seen == []
    assert ScopedToken.objects.get().uses == 0


def test_the_key_reaches_no_answer_or_event_on_either_path(proxied, provider_stub):
    token = proxied.token(scopes=["proxy"])
    provider_stub.answer(500, {"error": {"message": "upstream broke"}})

    async def calls(client: httpx.AsyncClient) -> str:
        answers = [
            await client.get(MODELS, headers=bearer(token)),
            await client.get(MODELS + "?key=1", headers=bearer(token)),
            await client.get(MODELS, headers={"x-api-key": token}),
        ]
        return "\n".join(a.text + repr(dict(a.headers)) for a in answers)

    seen = run(calls)
    assert_no_run(proxied.secret_a, seen, "an answer")
    assert_no_run(proxied.secret_a, repr(list(AuditEvent.objects.values())), "the audit log")
