"""One refusal, one audit event: whichever layer refuses, the log gets exactly one event,
with the actor who was refused, in the chain of the tenant it concerns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from audit.models import AuditEvent
from core.errors import NotFound
from kms.actions import tokens
from kms.models import ScopedToken
from tenants.actions import do_create_grant
from tests.factories import client
from tests.kms.world import SYSTEM, World

pytestmark = pytest.mark.django_db


def refused(call: Callable[[], Any], status: int) -> list[tuple[str, str, str, str]]:
    """Run one request that must be refused with `status`; the events it wrote, as
    (action, outcome, tenant, actor type)."""
    before = set(AuditEvent.objects.values_list("id", flat=True))
    response = call()
    assert response.status_code == status, response.content
    return [
        (e.action, e.outcome, e.tenant, e.actor_type)
        for e in AuditEvent.objects.exclude(id__in=before).order_by("occurred_at")
    ]


def _token_id(world: World, **ask: Any) -> str:
    plaintext = world.token(**ask)
    found = ScopedToken.objects.get(key_id=plaintext[4:16])
    return str(found.id)


def test_no_credentials_is_one_auth_failure():
    events = refused(lambda: client().get("/api/v1/tenants"), 401)
    assert events == [("auth.failed", "denied", "", "anonymous")]


def test_an_unknown_admin_token_is_one_auth_failure(world):
    token = "kwa_" + "A" * 12 + "B" * 43 + "000000"
    events = refused(lambda: client(token).get("/api/v1/tenants"), 401)
    assert events == [("auth.failed", "denied", "", "anonymous")]


def test_a_missing_role_is_one_access_denial(world):
    body = {"slug": "newco", "name": "New"}
    events = refused(lambda: world.actors.as_("carol").post("/api/v1/tenants", body), 403)
    assert events == [("access.denied", "denied", "", "user")]


def test_a_principal_on_an_admin_endpoint_is_one_access_denial(world):
    events = refused(lambda: world.api().get("/api/v1/tenants"), 403)
    assert events == [("access.denied", "denied", "", "principal")]


def test_a_hidden_tenant_is_one_access_denial_in_its_chain(world):
    slug = world.actors.tenant_b.slug
    events = refused(lambda: world.actors.as_("bob").get(f"/api/v1/tenants/{slug}"), 404)
    assert events == [("access.denied", "denied", slug, "user")]


def test_another_tenants_key_under_ones_own_tenant_is_one_access_denial(world):
    a, b = world.actors.tenant_a.slug, world.actors.tenant_b.slug
    url = f"/api/v1/tenants/{a}/keys/{world.key_b.id}"
    events = refused(lambda: world.actors.as_("bob").get(url), 404)
    assert events == [("access.denied", "denied", b, "user")]


def test_a_hidden_grant_is_one_access_denial(world):
    grant = do_create_grant(
        world.principal, world.actors.tenant_b, "openai", ["release"], 60, actor=SYSTEM
    )
    url = f"/api/v1/grants/{grant.id}"
    events = refused(lambda: world.actors.as_("bob").get(url), 404)
    assert events == [("access.denied", "denied", world.actors.tenant_b.slug, "user")]
    events = refused(lambda: world.actors.as_("bob").delete(url), 404)
    assert events == [("access.denied", "denied", world.actors.tenant_b.slug, "user")]


def test_revoking_a_hidden_token_by_id_is_one_access_denial(world):
    do_create_grant(world.principal, world.actors.tenant_b, "openai", ["release"], 60, actor=SYSTEM)
    token_id = _token_id(world, tenant=world.actors.tenant_b.slug)
    url = f"/api/v1/tokens/{token_id}/revoke"
    events = refused(lambda: world.actors.as_("bob").post(url), 404)
    assert events == [("access.denied", "denied", world.actors.tenant_b.slug, "user")]
    assert ScopedToken.objects.get(pk=token_id).revoked_at is None


def test_an_unknown_id_is_a_plain_404_and_writes_nothing(world):
    bob = world.actors.as_("bob")
    nothing = "00000000-0000-0000-0000-000000000000"
    assert refused(lambda: bob.get("/api/v1/grants/not-a-uuid"), 404) == []
    assert refused(lambda: bob.get(f"/api/v1/grants/{nothing}"), 404) == []
    assert refused(lambda: bob.post(f"/api/v1/tokens/{nothing}/revoke"), 404) == []


@pytest.mark.parametrize(
    ("ask", "status", "reason"),
    [
        ({"provider": "anthropic"}, 403, "no_grant"),
        ({"scopes": ["release"], "ttl_seconds": 100_000}, 400, "ttl_too_long"),
        ({"key": "no-such-label"}, 404, "key_not_found"),
    ],
)
def test_a_refused_token_request_is_one_token_denial(world, ask, status, reason):
    events = refused(lambda: world.issue(**ask), status)
    assert events == [("token.denied", "denied", world.actors.tenant_a.slug, "principal")]
    assert (
        AuditEvent.objects.filter(action="token.denied").latest("occurred_at").details["reason"]
        == reason
    )


def test_a_token_request_for_an_unknown_tenant_is_one_token_denial(world):
    events = refused(lambda: world.issue(tenant="no-such-tenant"), 403)
    assert events == [("token.denied", "denied", "", "principal")]


def test_an_exchange_without_the_scope_is_one_credential_denial(world):
    token = world.token(scopes=["proxy"])
    events = refused(lambda: client(token).post("/api/v1/exchange"), 403)
    assert events == [("credential.denied", "denied", world.actors.tenant_a.slug, "token")]


def test_an_exchange_with_a_revoked_token_is_one_credential_denial(world):
    token = world.token()
    found = ScopedToken.objects.get(key_id=token[4:16])
    tokens.do_revoke_token(found, actor=SYSTEM)
    events = refused(lambda: client(token).post("/api/v1/exchange"), 401)
    assert events == [("credential.denied", "denied", world.actors.tenant_a.slug, "token")]


def test_an_exchange_with_a_used_up_token_is_one_credential_denial(world):
    token = world.token(max_uses=1)
    assert client(token).post("/api/v1/exchange").status_code == 200
    events = refused(lambda: client(token).post("/api/v1/exchange"), 401)
    assert events == [("credential.denied", "denied", world.actors.tenant_a.slug, "token")]


def test_scoping_refuses_a_kind_of_object_it_was_not_told_about(world):
    from api.base import KeywardView
    from kms.models import KeyVersion
    from kms.queries import keys

    view = KeywardView()
    view.access = view.access.__class__(role="superuser", all_tenants=True)
    assert view.visible(keys(), NotFound, pk=world.key_a.pk) == world.key_a
    with pytest.raises(TypeError, match="no tenant scoping declared"):
        view.visible(KeyVersion.objects.all(), NotFound, key=world.key_a)


def _auth_failed():
    return AuditEvent.objects.filter(action__startswith="auth.failed")


@pytest.fixture
def one_minute():
    """Start well inside a minute, so that a test's failures share one window."""
    import time

    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60 + 0.1)


def test_repeated_failures_from_one_source_are_one_event_and_one_count(db, one_minute):
    import time

    from kms import jobs

    nobody = client("kwa_" + "A" * 12 + "B" * 43 + "000000")
    statuses = [nobody.get("/api/v1/tenants").status_code for _ in range(5)]
    statuses.append(client().post("/api/v1/tokens", {}, format="json").status_code)
    assert statuses == [401] * 6
    first = list(_auth_failed().values_list("action", flat=True))
    assert first == ["auth.failed", "auth.failed"], "the first of each reason, at once"
    assert jobs.summarise_auth_failures() == 0, "the minute is not over yet"
    assert jobs.summarise_auth_failures(now=time.time() + 60) == 1
    summary = AuditEvent.objects.get(action="auth.failed_repeated")
    assert summary.details["count"] == 5 and summary.details["reason"] == "malformed"
    assert summary.details["source_ip"] == "127.0.0.1"
    assert jobs.summarise_auth_failures(now=time.time() + 60) == 0, "each count is taken once"


def test_too_many_failures_from_one_source_get_429(db, settings, one_minute):
    settings.AUTH_FAILURE_LIMIT = 3
    statuses = [client().get("/api/v1/tenants").status_code for _ in range(3)]
    limited = client().post("/api/v1/tokens", {}, format="json")
    assert statuses == [401, 401, 401]
    assert limited.status_code == 429, limited.content
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert _auth_failed().count() == 1


def test_another_source_has_its_own_first_event(db, settings, one_minute):
    settings.TRUSTED_PROXY_COUNT = 1
    for source in ("203.0.113.7", "203.0.113.7", "198.51.100.9"):
        client().get("/api/v1/tenants", HTTP_X_FORWARDED_FOR=source)
    events = AuditEvent.objects.filter(action="auth.failed")
    sources = sorted(str(ip) for ip in events.values_list("source_ip", flat=True))
    assert sources == ["198.51.100.9", "203.0.113.7"]
