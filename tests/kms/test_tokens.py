"""Issuing scoped tokens: every refusal with its status, nothing changed, and audited."""

from __future__ import annotations

import pytest
from django.db import connection

from audit.models import AuditEvent
from kms.models import ScopedToken
from tenants.models import Grant
from tests.kms.world import SYSTEM, onboard_key
from tests.provider_stub import KEYS

pytestmark = pytest.mark.django_db


def test_a_principal_with_a_grant_gets_a_token(world):
    response = world.issue(ttl_seconds=120, max_uses=5)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["token"].startswith("kwt_") and len(body["token"]) == 65
    assert body["token_type"] == "Bearer" and body["expires_in"] == 120
    assert body["tenant"] == world.actors.tenant_a.slug and body["provider"] == "openai"
    assert body["key_id"] == str(world.key_a.id) and body["scopes"] == ["release"]
    assert response["Cache-Control"] == "no-store"
    row = ScopedToken.objects.get(pk=body["token_id"])
    assert (row.max_uses, row.key_version, row.principal_id) == (5, None, world.principal.id)
    event = AuditEvent.objects.get(action="token.issued")
    assert event.actor_type == "principal" and event.actor_id == str(world.principal.id)
    assert body["token"] not in repr(event.details) and body["token"][4:] not in repr(event.details)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM kms_scopedtoken")
        assert body["token"][16:59] not in repr(cursor.fetchall())


def test_the_ttl_defaults_and_is_capped_by_the_grant(world, settings):
    settings.TOKEN_DEFAULT_TTL = 300
    assert world.issue().json()["expires_in"] == 300
    Grant.objects.filter(pk=world.grant.pk).update(max_ttl_seconds=60)
    assert world.issue().json()["expires_in"] == 60


def test_a_key_can_be_named_by_id_or_label(world):
    second = onboard_key(world.actors.tenant_a, KEYS["openai"][:-6] + "abcdef", label="backup")
    assert world.issue().status_code == 409, "two active keys: ambiguous without `key`"
    assert world.issue(key="backup").json()["key_id"] == str(second.id)
    assert world.issue(key=str(world.key_a.id)).json()["key_id"] == str(world.key_a.id)


def _refused(world, response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert not ScopedToken.objects.exists()


REFUSALS = {
    "another tenant": (lambda w: {"tenant": w.actors.tenant_b.slug}, 403, "no_grant"),
    "a tenant that does not exist": (lambda w: {"tenant": "no-such-tenant"}, 403, "no_grant"),
    "another provider": (lambda w: {"provider": "anthropic"}, 403, "no_grant"),
    "a scope not granted": (lambda w: {"scopes": ["release", "proxy", "proxy"]}, 400, "invalid"),
    "ttl above the grant": (lambda w: {"ttl_seconds": 901}, 400, "ttl_too_long"),
    "an unknown key label": (lambda w: {"key": "nope"}, 404, "key_not_found"),
    "an unknown scope": (lambda w: {"scopes": ["admin"]}, 400, "invalid"),
    "no scopes": (lambda w: {"scopes": []}, 400, "invalid"),
    "an unknown field": (lambda w: {"audience": "x"}, 400, "invalid"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(world, case):
    make, status, code = REFUSALS[case]
    _refused(world, world.issue(**make(world)), status, code)


def test_a_scope_outside_the_grant_is_refused(world):
    Grant.objects.filter(pk=world.grant.pk).update(scopes=["release"])
    _refused(world, world.issue(scopes=["proxy"]), 403, "no_grant")
    event = AuditEvent.objects.get(action="token.denied")
    assert (event.outcome, event.details["reason"], event.tenant) == (
        "denied",
        "no_grant",
        world.actors.tenant_a.slug,
    )


def test_a_suspended_tenant_gets_no_tokens(world):
    world.actors.as_("alice").patch(
        f"/api/v1/tenants/{world.actors.tenant_a.slug}", {"status": "suspended"}, format="json"
    )
    _refused(world, world.issue(), 403, "tenant_suspended")


@pytest.mark.parametrize("status", ["revoked", "invalid"])
def test_a_key_that_is_not_active_gets_409(world, status):
    world.key_a.status = status
    world.key_a.save()
    _refused(world, world.issue(), 409, "key_not_active")


def test_a_global_grant_with_no_key_for_the_provider_gets_404(world):
    from tenants.actions import do_create_grant

    do_create_grant(world.principal, None, "*", ["release"], 600, actor=SYSTEM)
    _refused(world, world.issue(provider="anthropic"), 404, "key_not_found")
    assert world.issue(tenant=world.actors.tenant_b.slug).status_code == 201


@pytest.mark.parametrize(
    "ask",
    [
        {},
        {"tenant": "no-such"},
        {"provider": "anthropic"},
        {"scopes": ["proxy"]},
        {"key": "prod"},
        {"ttl_seconds": 10},
    ],
)
def test_a_principal_with_no_grants_gets_nothing_whatever_it_asks(world, ask):
    for tenant in (world.actors.tenant_a.slug, world.actors.tenant_b.slug):
        response = world.issue(world.stranger_secret, **{"tenant": tenant, **ask})
        assert response.status_code == 403, response.content
    assert not ScopedToken.objects.exists()
    assert (
        AuditEvent.objects.filter(action="token.denied", actor_id=str(world.stranger.id)).count()
        == 2
    )


@pytest.mark.parametrize("who", ["alice", "bob", "carol", "charlie", "anonymous"])
def test_only_a_principal_secret_can_ask_for_a_token(world, who):
    body = {"tenant": world.actors.tenant_a.slug, "provider": "openai", "scopes": ["release"]}
    response = world.actors.as_(who).post("/api/v1/tokens", body, format="json")
    assert response.status_code == (401 if who == "anonymous" else 403)
    assert not ScopedToken.objects.exists()


def test_a_scoped_token_cannot_mint_more_tokens(world):
    token = world.token()
    response = world.api(token).post(
        "/api/v1/tokens",
        {"tenant": world.actors.tenant_a.slug, "provider": "openai", "scopes": ["release"]},
        format="json",
    )
    assert response.status_code == 403
    assert ScopedToken.objects.count() == 1
