"""The proxy: provider calls forwarded with the tenant's key injected (issue 12, first
slice: the ASGI application in process, a stub provider on loopback)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection, transaction

from api.proxy import application
from audit.models import AuditEvent
from kms.actions import keys
from kms.models import ScopedToken
from tenants.actions import do_create_grant
from tests.factories import client, make_principal
from tests.kms.test_canary import assert_no_run
from tests.kms.world import SYSTEM

pytestmark = pytest.mark.django_db

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
}


def call(method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
    """One request to the proxy application, in process; the checks it runs in a thread
    share the test's database connection (async_to_sync runs them on this thread)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://keyward") as client:
                return await client.request(method, path, headers=headers, **kwargs)
        finally:
            await application.aclose()

    return async_to_sync(go)()


@pytest.fixture
def proxied(world, provider_stub, settings):
    settings.PROVIDER_BASE_URLS = {"openai": provider_stub.url + "/v1"}
    # The checks run in Django's thread, on the connection that holds the test's
    # transaction (`test_native` covers the asyncio pool, with committed data).
    settings.PROXY_DB_POOL_SIZE = 0
    return world


def test_a_call_is_forwarded_with_the_tenants_key_and_none_of_the_callers_credentials(
    proxied, provider_stub
):
    token = proxied.token(scopes=["proxy"])
    provider_stub.answer(200, COMPLETION)
    response = call(
        "POST",
        "/api/v1/proxy/openai/chat/completions?stream=false",
        token,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": "caller-key", "Cookie": "s=1", "OpenAI-Beta": "assistants=v2"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == COMPLETION
    assert response.headers["x-request-id"]
    seen = provider_stub.seen[-1]
    assert (seen.method, seen.path, seen.query) == ("POST", "/v1/chat/completions", "stream=false")
    assert seen.headers["authorization"] == f"Bearer {proxied.secret_a}"
    assert "x-api-key" not in seen.headers and "cookie" not in seen.headers
    assert seen.headers["openai-beta"] == "assistants=v2"
    assert token not in json.dumps(seen.headers)
    assert json.loads(seen.body)["model"] == "gpt-4o-mini"
    event = AuditEvent.objects.filter(action="proxy.request").get()
    assert event.outcome == "success"
    assert event.details["upstream_status"] == 200
    assert event.details["model"] == "gpt-4o-mini"
    assert event.details["path"] == "/chat/completions"
    assert event.details["usage"] == COMPLETION["usage"]
    assert event.details["latency_ms"] >= 0
    assert event.details["key_id"] == str(proxied.key_a.id)


def test_a_provider_error_is_passed_through_and_keywards_own_refusals_are_marked(
    proxied, provider_stub
):
    token = proxied.token(scopes=["proxy"])
    provider_stub.answer(429, {"error": {"message": "slow down", "type": "rate_limit"}})
    passed = call("POST", "/api/v1/proxy/openai/chat/completions", token, json={})
    assert passed.status_code == 429
    assert passed.json()["error"]["message"] == "slow down"
    assert "x-keyward-refusal" not in passed.headers
    refused = call("POST", "/api/v1/proxy/openai/chat/completions", "kwt_nonsense", json={})
    assert refused.status_code == 401
    assert refused.headers["x-keyward-refusal"] == "unauthenticated"
    assert set(refused.json()["error"]) >= {"code", "message", "request_id"}
    event = AuditEvent.objects.filter(action="proxy.request").get()
    assert (event.outcome, event.details["upstream_status"]) == ("error", 429)


@pytest.mark.parametrize(
    ("scopes", "path", "status", "code"),
    [
        (["release"], "/api/v1/proxy/openai/models", 403, "insufficient_scope"),
        (["proxy"], "/api/v1/proxy/anthropic/v1/messages", 403, "provider_mismatch"),
        (["proxy"], "/api/v1/proxy/nosuch/models", 404, "unknown_provider"),
        (["proxy"], "/api/v1/proxy/openai/models?key=sk-mine", 400, "invalid"),
    ],
)
def test_refusals_reach_no_provider(proxied, provider_stub, scopes, path, status, code):
    token = proxied.token(scopes=scopes)
    response = call("GET", path, token)
    assert response.status_code == status, response.text
    assert response.headers["x-keyward-refusal"] == code
    assert provider_stub.seen == []
    assert not AuditEvent.objects.filter(action="proxy.request").exists()


@pytest.mark.parametrize("revoke", ["token", "key", "grant"])
def test_revoking_the_token_its_key_or_its_grant_stops_the_next_call(
    proxied, provider_stub, revoke
):
    token = proxied.token(scopes=["proxy"])
    provider_stub.answer(200, COMPLETION)
    assert call("GET", "/api/v1/proxy/openai/models", token).status_code == 200
    proxied.revoke(revoke)
    refused = call("GET", "/api/v1/proxy/openai/models", token)
    assert refused.status_code == 401, refused.text
    assert refused.headers["x-keyward-refusal"] == "unauthenticated"
    assert len(provider_stub.seen) == 1


def test_max_uses_is_counted_per_call(proxied, provider_stub):
    token = proxied.token(scopes=["proxy"], max_uses=2)
    provider_stub.answer(200, COMPLETION)
    statuses = [call("GET", "/api/v1/proxy/openai/models", token).status_code for _ in range(3)]
    assert statuses == [200, 200, 401]
    assert len(provider_stub.seen) == 2


def test_the_key_appears_in_no_answer_event_or_log(proxied, provider_stub, caplog):
    caplog.set_level(logging.DEBUG)
    token = proxied.token(scopes=["proxy"])
    secret = proxied.secret_a
    provider_stub.answer(401, {"error": {"message": "bad key", "code": "invalid_api_key"}})
    answers = [
        call("POST", "/api/v1/proxy/openai/chat/completions", token, json={"model": "m"}),
        call("GET", "/api/v1/proxy/openai/models?key=x", token),
        call("GET", "/api/v1/proxy/anthropic/models", token),
    ]
    seen = "\n".join(r.text + repr(dict(r.headers)) for r in answers)
    events = repr(list(AuditEvent.objects.values()))
    for where, haystack in (
        ("an answer", seen),
        ("the audit log", events),
        ("the logs", caplog.text),
    ):
        assert_no_run(secret, haystack, where)


def test_a_model_outside_the_allowlist_is_refused_and_audited(proxied, provider_stub, actors):
    grant = proxied.grant
    grant.allowed_models = ["gpt-4o-mini"]
    grant.save(update_fields=["allowed_models"])
    token = proxied.token(scopes=["proxy"])
    provider_stub.answer(200, COMPLETION)
    refused = call("POST", "/api/v1/proxy/openai/chat/completions", token, json={"model": "gpt-4o"})
    assert refused.status_code == 403, refused.text
    assert refused.headers["x-keyward-refusal"] == "model_not_allowed"
    assert provider_stub.seen == []
    denial = AuditEvent.objects.get(action="credential.denied")
    assert (denial.details["reason"], denial.details["model"]) == ("model_not_allowed", "gpt-4o")
    allowed = call(
        "POST", "/api/v1/proxy/openai/chat/completions", token, json={"model": "gpt-4o-mini"}
    )
    assert allowed.status_code == 200
    unnamed = call("GET", "/api/v1/proxy/openai/models", token)
    assert unnamed.status_code == 200, "a body that names no model is not refused"


def test_a_token_may_narrow_its_grants_models_but_not_widen_them(proxied, provider_stub):
    grant = proxied.grant
    grant.allowed_models = ["gpt-4o-mini", "gpt-4o"]
    grant.save(update_fields=["allowed_models"])
    wider = proxied.issue(scopes=["proxy"], models=["gpt-4o", "o3"])
    assert wider.status_code == 403, wider.content
    assert wider.json()["error"]["code"] == "model_not_granted"
    assert AuditEvent.objects.filter(action="token.denied").exists()
    narrow = proxied.issue(scopes=["proxy"], models=["gpt-4o"])
    assert narrow.status_code == 201, narrow.content
    assert narrow.json()["models"] == ["gpt-4o"]
    token = narrow.json()["token"]
    provider_stub.answer(200, COMPLETION)
    body = {"model": "gpt-4o-mini"}
    assert call("POST", "/api/v1/proxy/openai/v1/x", token, json=body).status_code == 403
    body = {"model": "gpt-4o"}
    assert call("POST", "/api/v1/proxy/openai/v1/x", token, json=body).status_code == 200


@pytest.mark.parametrize("models", [["gpt 4"], ["x" * 201], "gpt-4o", [1], ["a\u0000b"]])
def test_bad_model_lists_are_refused(proxied, models):
    response = proxied.issue(scopes=["proxy"], models=models)
    assert response.status_code == 400, response.content
    assert "models" in response.json()["error"]["fields"]


def test_a_grant_carries_its_models(actors, world):
    api = actors.as_("alice")
    body = {
        "principal": str(world.principal.id),
        "tenant": actors.tenant_a.slug,
        "provider": "openai",
        "scopes": ["proxy"],
        "max_ttl_seconds": 300,
        "models": ["gpt-4o-mini"],
    }
    created = api.post("/api/v1/grants", body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["models"] == ["gpt-4o-mini"]
    bad = api.post("/api/v1/grants", {**body, "models": ["has space"]}, format="json")
    assert bad.status_code == 400
    assert "models" in bad.json()["error"]["fields"]


@contextlib.contextmanager
def _read_only() -> Iterator[None]:
    """The test's database connection may read but not write, until the block ends."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # undone when the savepoint is rolled back
            cursor.execute("SET LOCAL transaction_read_only = on")
        else:
            cursor.execute("PRAGMA query_only = ON")
        try:
            yield
        finally:
            if connection.vendor == "sqlite":
                cursor.execute("PRAGMA query_only = OFF")
            transaction.set_rollback(True)


def test_no_call_starts_while_the_audit_log_cannot_be_written(proxied, provider_stub):
    token = proxied.token(scopes=["proxy"], max_uses=5)
    provider_stub.answer(200, COMPLETION)
    assert call("GET", "/api/v1/proxy/openai/models", token).status_code == 200
    events, seen = AuditEvent.objects.count(), len(provider_stub.seen)
    with _read_only():  # reads work (the token's last use was just noted), writes fail
        refused = call("GET", "/api/v1/proxy/openai/models", token)
    assert refused.status_code == 503, refused.text
    assert refused.headers["x-keyward-refusal"] == "audit_unavailable"
    assert refused.headers["retry-after"]
    assert len(provider_stub.seen) == seen
    assert ScopedToken.objects.get().uses == 1
    assert AuditEvent.objects.count() == events


def test_an_upload_is_streamed_upstream_with_its_length(proxied, provider_stub):
    token = proxied.token(scopes=["proxy"])
    provider_stub.answer(200, {"text": "hello"})
    upload = b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\n" + b"\x00\xff" * 40000
    response = call(
        "POST",
        "/api/v1/proxy/openai/audio/transcriptions",
        token,
        content=upload,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 200, response.text
    seen = provider_stub.seen[-1]
    assert seen.body == upload
    assert seen.headers["content-length"] == str(len(upload))
    event = AuditEvent.objects.get(action="proxy.request")
    assert event.details["model"] is None


@pytest.mark.parametrize("kind", ["application/json", "application/octet-stream"])
def test_a_body_over_the_limit_is_refused_and_not_forwarded(proxied, provider_stub, settings, kind):
    settings.PROXY_MAX_BODY_BYTES = 1024
    token = proxied.token(scopes=["proxy"])
    response = call(
        "POST",
        "/api/v1/proxy/openai/files",
        token,
        content=b"x" * 2048,
        headers={"Content-Type": kind},
    )
    assert response.status_code == 413, response.text
    assert response.headers["x-keyward-refusal"] == "body_too_large"
    assert provider_stub.seen == []


def _proxy_token(actors: Any, provider: str, secret: str, **ask: Any) -> str:
    """A `proxy` token of a new principal for a new `provider` key of tenant A."""
    principal, client_secret = make_principal()
    tenant = actors.tenant_a
    base_url = settings.PROVIDER_BASE_URLS[provider] if provider == "azure_openai" else ""
    keys.do_onboard_key(
        tenant,
        keys.KeyInput(provider, "p", secret, base_url=base_url),
        validate=False,
        actor=SYSTEM,
    )
    do_create_grant(principal, tenant, provider, ["proxy"], 900, actor=SYSTEM)
    body = {"tenant": tenant.slug, "provider": provider, "scopes": ["proxy"], **ask}
    issued = client(client_secret).post("/api/v1/tokens", body, format="json")
    assert issued.status_code == 201, issued.content
    return str(issued.json()["token"])


def test_a_gemini_model_named_in_the_path_is_held_to_the_allowlist(actors, provider_stub, settings):
    settings.PROXY_DB_POOL_SIZE = 0
    token = _proxy_token(actors, "google", "AIza" + "g" * 35, models=["gemini-2.0-flash"])
    provider_stub.answer(200, {"candidates": []})
    path = "/api/v1/proxy/google/v1beta/models/{}:generateContent"
    refused = call("POST", path.format("gemini-2.5-pro"), token, json={"contents": []})
    assert refused.status_code == 403, refused.text
    assert refused.headers["x-keyward-refusal"] == "model_not_allowed"
    allowed = call("POST", path.format("gemini-2.0-flash"), token, json={"contents": []})
    assert allowed.status_code == 200, allowed.text
    seen = provider_stub.seen[-1]
    assert seen.headers["x-goog-api-key"] == "AIza" + "g" * 35
    assert "key=" not in seen.query
    assert len(provider_stub.seen) == 1


AZURE_KEY, MISTRAL_KEY, ANTHROPIC_KEY = "a1" * 16, "M" * 32, "sk-ant-api03-" + "k" * 40


@pytest.mark.parametrize(
    ("provider", "secret", "path", "sent", "expected"),
    [
        (
            "azure_openai",
            AZURE_KEY,
            "/openai/deployments/d/chat/completions?api-version=2024-10-21",
            {"api-key": "kwt-ignored"},
            {"api-key": AZURE_KEY},
        ),
        (
            "anthropic",
            ANTHROPIC_KEY,
            "/v1/messages",
            {},
            {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
        ),
        (
            "anthropic",
            ANTHROPIC_KEY,
            "/v1/messages",
            {"anthropic-version": "2024-01-01", "anthropic-beta": "tools-2024-05-16"},
            {
                "x-api-key": ANTHROPIC_KEY,
                "anthropic-version": "2024-01-01",
                "anthropic-beta": "tools-2024-05-16",
            },
        ),
        (
            "mistral",
            MISTRAL_KEY,
            "/v1/chat/completions",
            {},
            {"authorization": f"Bearer {MISTRAL_KEY}"},
        ),
    ],
)
def test_each_provider_gets_its_own_authentication_and_none_of_the_callers(
    actors, provider_stub, settings, provider, secret, path, sent, expected
):
    settings.PROXY_DB_POOL_SIZE = 0
    token = _proxy_token(actors, provider, secret)
    provider_stub.answer(200, {"ok": True})
    headers = {"x-goog-api-key": "mine", "x-api-key": "mine", **sent}
    answer = call("POST", f"/api/v1/proxy/{provider}{path}", token, json={}, headers=headers)
    assert answer.status_code == 200, answer.text
    seen = provider_stub.seen[-1].headers
    for name, value in expected.items():
        assert seen[name] == value
    for name in {"authorization", "x-api-key", "api-key", "x-goog-api-key"} - set(expected):
        assert name not in seen, name


def test_a_call_on_the_platform_key_says_so_and_the_provider_cannot_claim_otherwise(
    proxied, provider_stub
):
    from tenants.actions import do_create_tenant, do_update_tenant
    from tests.kms.helpers import openai_key
    from tests.kms.world import onboard_key

    platform = do_create_tenant("platform", "Platform", platform=True, actor=SYSTEM)
    platform_secret = openai_key("plat")
    shared = onboard_key(platform, platform_secret, "shared")
    own = call("POST", "/api/v1/proxy/openai/chat/completions", proxied.token(scopes=["proxy"]))
    assert own.status_code == 200, own.text
    assert own.headers["keyward-credential-source"] == "tenant"
    do_update_tenant(proxied.actors.tenant_a, key_policy="platform_only", actor=SYSTEM)
    token = proxied.token(scopes=["proxy"])
    provider_stub.answer(200, COMPLETION, headers={"Keyward-Credential-Source": "tenant"})
    response = call("POST", "/api/v1/proxy/openai/chat/completions", token, json={"x": 1})
    assert response.status_code == 200, response.text
    assert response.headers.get_list("keyward-credential-source") == ["platform"]
    assert provider_stub.seen[-1].headers["authorization"] == f"Bearer {platform_secret}"
    event = AuditEvent.objects.filter(action="proxy.request").last()
    assert event is not None
    assert event.tenant == proxied.actors.tenant_a.slug
    assert (event.details["credential_source"], event.details["key_id"]) == (
        "platform",
        str(shared.id),
    )


def test_a_post_declaring_an_empty_body_is_forwarded_not_refused_as_too_large(
    proxied, provider_stub
):
    token = proxied.token(scopes=["proxy"])
    response = call(
        "POST", "/api/v1/proxy/openai/batches/b1/cancel", token, headers={"Content-Length": "0"}
    )
    assert response.status_code == 200, response.text
    assert provider_stub.seen[-1].path == "/v1/batches/b1/cancel"
