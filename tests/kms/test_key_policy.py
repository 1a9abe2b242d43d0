"""A tenant's key policy: its own key, the platform's, or a refusal, and never a silent
switch from a tenant key that stopped working to the platform's."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from kms.actions import keys, retirement
from kms.models import KeyStatus, ProviderKey, ScopedToken
from tenants.actions import do_create_grant, do_create_tenant, do_update_tenant
from tenants.models import Tenant
from tests.factories import client
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM, onboard_key

pytestmark = pytest.mark.django_db

TENANT, PLATFORM = "tenant", "platform"


@pytest.fixture
def platform(world: Any) -> Tenant:
    return do_create_tenant("platform", "The platform", platform=True, actor=SYSTEM)


def _platform_key(platform: Tenant, label: str = "shared") -> tuple[ProviderKey, str]:
    secret = openai_key("plat")
    return onboard_key(platform, secret, label), secret


def _set_policy(tenant: Tenant, policy: str, fallback: bool = False) -> None:
    do_update_tenant(tenant, key_policy=policy, platform_fallback=fallback, actor=SYSTEM)


def _put_tenant_key_in(world: Any, situation: str) -> None:
    if situation == "invalid":
        ProviderKey.objects.filter(pk=world.key_a.pk).update(status=KeyStatus.INVALID)
    elif situation == "revoked":
        retirement.do_revoke_key(world.key_a, actor=SYSTEM)
    elif situation == "absent":
        ProviderKey.objects.filter(pk=world.key_a.pk).delete()


def _exchanged(world: Any) -> tuple[int, dict[str, Any]]:
    issued = world.issue()
    if issued.status_code != 201:
        return issued.status_code, issued.json()
    released = client(issued.json()["token"]).post("/api/v1/exchange")
    assert released.status_code == 200, released.content
    assert released.json()["credential_source"] == issued.json()["credential_source"]
    return 201, released.json()


# (policy, platform_fallback, the tenant's key, a platform key) -> whose key, or a refusal
MATRIX = [
    *[
        (policy, fallback, situation, present)
        for policy, fallback in (
            ("byok_required", False),
            ("byok_preferred", False),
            ("byok_preferred", True),
            ("platform_only", False),
        )
        for situation in ("active", "invalid", "revoked", "absent")
        for present in (True, False)
    ]
]


def _expected(policy: str, fallback: bool, situation: str, present: bool) -> str:
    """The documented outcome: `tenant`, `platform`, or the refusal's code."""
    if policy == "byok_required" or (policy == "byok_preferred" and situation == "active"):
        return {"active": TENANT, "absent": "key_not_found"}.get(situation, "key_not_active")
    if policy == "byok_preferred" and situation != "absent" and not fallback:
        return "key_not_active"
    return PLATFORM if present else "key_not_found"


@pytest.mark.parametrize(("policy", "fallback", "situation", "present"), MATRIX)
def test_every_policy_and_key_situation_gives_the_documented_credential_or_refusal(
    world, platform, policy, fallback, situation, present
):
    tenant = world.actors.tenant_a
    platform_secret = _platform_key(platform)[1] if present else None
    _put_tenant_key_in(world, situation)
    _set_policy(tenant, policy, fallback)
    before = ScopedToken.objects.count()
    status, body = _exchanged(world)
    expected = _expected(policy, fallback, situation, present)
    if expected in (TENANT, PLATFORM):
        assert status == 201, body
        assert body["credential_source"] == expected
        assert body["api_key"] == (world.secret_a if expected == TENANT else platform_secret)
        [issued] = AuditEvent.objects.filter(action="token.issued", tenant=tenant.slug)
        [released] = AuditEvent.objects.filter(action="credential.released")
        assert issued.details["credential_source"] == released.details["credential_source"]
        assert released.details["credential_source"] == expected
        assert released.tenant == tenant.slug
    else:
        assert body["error"]["code"] == expected, body
        assert status == (404 if expected == "key_not_found" else 409)
        assert ScopedToken.objects.count() == before
        denied = AuditEvent.objects.get(action="token.denied", tenant=tenant.slug)
        assert denied.details["reason"] == expected


def test_a_tenant_key_that_stopped_working_is_named_in_the_refusal(world, platform):
    _platform_key(platform)
    _put_tenant_key_in(world, "invalid")
    _set_policy(world.actors.tenant_a, "byok_preferred")
    response = world.issue()
    assert response.status_code == 409
    assert "does not fall back to the platform key" in response.json()["error"]["message"]


def test_introspection_states_whose_key_a_token_uses(world, platform):
    _platform_key(platform)
    _set_policy(world.actors.tenant_a, "platform_only")
    token = world.token()
    answer = client(world.secret).post("/api/v1/tokens/introspect", {"token": token}, format="json")
    assert answer.json()["credential_source"] == PLATFORM
    assert answer.json()["tenant"] == world.actors.tenant_a.slug


def test_a_request_naming_a_key_the_policy_does_not_allow_is_refused(world, platform):
    shared, _ = _platform_key(platform)
    tenant = world.actors.tenant_a
    before = ScopedToken.objects.count()
    # Under byok_required a platform key is no key of this tenant's: not found, by id or
    # label, so that a principal learns nothing of the platform's keys.
    for ref in (str(shared.id), shared.label):
        hidden = world.issue(key=ref)
        assert hidden.status_code == 404, hidden.content
        assert hidden.json()["error"]["code"] == "key_not_found"
    _set_policy(tenant, "platform_only")
    named_own = world.issue(key=str(world.key_a.id))
    assert named_own.status_code == 409, named_own.content
    assert named_own.json()["error"]["code"] == "key_policy_refused"
    assert ScopedToken.objects.count() == before
    _set_policy(tenant, "byok_preferred")  # the tenant has an active key of its own
    assert world.issue(key=str(shared.id)).json()["error"]["code"] == "key_not_found"


@pytest.mark.parametrize("ref", ["id", "label"])
@pytest.mark.parametrize("situation", ["invalid", "revoked"])
def test_naming_the_tenants_own_key_that_stopped_working_never_swaps_in_a_platform_key(
    world, platform, ref, situation
):
    """A fallback serves the platform key by default, never in place of an own key the
    request names, even when a platform key has the same label."""
    _platform_key(platform, label=world.key_a.label)
    _put_tenant_key_in(world, situation)
    _set_policy(world.actors.tenant_a, "byok_preferred", fallback=True)
    before = ScopedToken.objects.count()
    named = world.issue(key=str(world.key_a.id) if ref == "id" else world.key_a.label)
    assert named.status_code == 409, named.content
    assert named.json()["error"]["code"] == "key_not_active"
    assert ScopedToken.objects.count() == before
    assert _exchanged(world)[1]["credential_source"] == PLATFORM  # the default still falls back


def test_a_platform_key_is_named_by_id_or_label_and_the_oldest_serves_by_default(world, platform):
    first, first_secret = _platform_key(platform, "first")
    _, second_secret = _platform_key(platform, "second")
    _set_policy(world.actors.tenant_a, "platform_only")
    assert _exchanged(world)[1]["api_key"] == first_secret
    for ref, secret in (("second", second_secret), (str(first.id), first_secret)):
        released = client(world.token(key=ref)).post("/api/v1/exchange").json()
        assert (released["api_key"], released["credential_source"]) == (secret, PLATFORM)


def test_a_platform_token_stops_working_when_the_policy_no_longer_allows_it(world, platform):
    _platform_key(platform)
    tenant = world.actors.tenant_a
    _set_policy(tenant, "platform_only")
    token = world.token()
    _set_policy(tenant, "byok_required")
    refused = client(token).post("/api/v1/exchange")
    assert refused.status_code == 401
    denied = AuditEvent.objects.get(action="credential.denied")
    assert denied.details["reason"] == "key_policy_changed"
    assert denied.details["credential_source"] == PLATFORM
    assert not AuditEvent.objects.filter(action="credential.released").exists()


def test_revoking_the_platform_key_ends_every_tenants_tokens_on_it(world, platform):
    shared, _ = _platform_key(platform)
    _set_policy(world.actors.tenant_a, "platform_only")
    token = world.token()
    retirement.do_revoke_key(shared, actor=SYSTEM)
    assert client(token).post("/api/v1/exchange").status_code == 401


def test_the_platform_tenant_is_never_a_tokens_tenant_nor_granted(world, platform):
    _platform_key(platform)
    do_create_grant(world.principal, None, "openai", ["release"], 900, actor=SYSTEM)
    refused = world.issue(tenant=platform.slug)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "no_grant"
    grant = client(world.actors.tokens["alice"]).post(
        "/api/v1/grants",
        {
            "principal": str(world.principal.id),
            "tenant": platform.slug,
            "provider": "openai",
            "scopes": ["release"],
            "max_ttl_seconds": 600,
        },
        format="json",
    )
    assert grant.status_code == 400, grant.content
    assert grant.json()["error"]["code"] == "platform_tenant"
    assert not ScopedToken.objects.filter(tenant=platform).exists()


def test_only_one_platform_tenant_exists(world, platform):
    alice = client(world.actors.tokens["alice"])
    response = alice.post(
        "/api/v1/tenants", {"slug": "platform-2", "name": "Second", "platform": True}, format="json"
    )
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "platform_tenant_exists"
    assert not Tenant.objects.filter(slug="platform-2").exists()
    listed = alice.get(f"/api/v1/tenants/{platform.slug}").json()
    assert listed["platform"] is True


def test_platform_keys_are_managed_by_admins_of_every_tenant_only(world, platform):
    shared, _ = _platform_key(platform)
    url = f"/api/v1/tenants/{platform.slug}/keys"
    assert client(world.actors.tokens["alice"]).get(url).status_code == 200
    bob = client(world.actors.tokens["bob"])  # a security admin of tenant A only
    assert bob.get(url).status_code == 404
    assert bob.delete(f"{url}/{shared.id}").status_code == 404
    assert ProviderKey.objects.get(pk=shared.pk).status == KeyStatus.ACTIVE
    slugs = [t["slug"] for t in bob.get("/api/v1/tenants").json()["results"]]
    assert platform.slug not in slugs


def test_changing_a_tenants_policy_is_audited_and_bad_values_change_nothing(world):
    tenant = world.actors.tenant_a
    url = f"/api/v1/tenants/{tenant.slug}"
    alice = client(world.actors.tokens["alice"])
    bob = client(world.actors.tokens["bob"])  # a security admin of tenant A only
    for bad in ({"key_policy": "sometimes"}, {"platform_fallback": "perhaps"}):
        refused = alice.patch(url, bad, format="json")
        assert refused.status_code == 400, refused.content
    other = bob.patch(
        f"/api/v1/tenants/{world.actors.tenant_b.slug}",
        {"key_policy": "platform_only"},
        format="json",
    )
    assert other.status_code == 404
    assert Tenant.objects.get(pk=world.actors.tenant_b.pk).key_policy == "byok_required"
    assert not AuditEvent.objects.filter(action="tenant.key_policy_changed").exists()
    changed = alice.patch(
        url, {"key_policy": "byok_preferred", "platform_fallback": True}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert (changed.json()["key_policy"], changed.json()["platform_fallback"]) == (
        "byok_preferred",
        True,
    )
    event = AuditEvent.objects.get(action="tenant.key_policy_changed")
    assert event.details["changes"] == {
        "key_policy": ["byok_required", "byok_preferred"],
        "platform_fallback": [False, True],
    }
    assert event.tenant == tenant.slug


@pytest.fixture
def regions(settings: Any) -> None:
    settings.SECRET_STORES = {
        "default": {"backend": "local", "region": "eu"},
        "eu-2": {"backend": "local", "region": "eu"},
        "us": {"backend": "local", "region": "us"},
    }


def _pin(tenant: Tenant, store: str) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(store=store)


def test_a_pinned_tenant_gets_a_platform_key_of_its_region_only(world, platform, regions):
    tenant = world.actors.tenant_a
    _, platform_secret = _platform_key(platform)  # in the default store, region eu
    _set_policy(tenant, "platform_only")
    _pin(tenant, "us")
    before = ScopedToken.objects.count()
    refused = world.issue()
    assert refused.status_code == 409, refused.content
    assert refused.json()["error"]["code"] == "residency_refused"
    assert "(us)" in refused.json()["error"]["message"]
    assert ScopedToken.objects.count() == before
    assert AuditEvent.objects.get(action="token.denied").details["reason"] == "residency_refused"
    _pin(tenant, "eu-2")  # another store of the same region
    status, released = _exchanged(world)
    assert (status, released["api_key"]) == (201, platform_secret)


def test_a_platform_key_named_from_another_region_is_refused_with_its_region(
    world, platform, regions
):
    tenant = world.actors.tenant_a
    _platform_key(platform, label="eu-shared")  # the default store: region eu
    us_key = keys.do_onboard_key(
        platform,
        keys.KeyInput("openai", "us-shared", openai_key("plat-us"), store="us"),
        validate=False,
        actor=SYSTEM,
    )
    _set_policy(tenant, "platform_only")
    _pin(tenant, "eu-2")
    before = ScopedToken.objects.count()
    refused = world.issue(key=us_key.label)
    assert refused.status_code == 409, refused.content
    assert refused.json()["error"]["code"] == "residency_refused"
    message = refused.json()["error"]["message"]
    assert "held in region us" in message and "(eu)" in message
    assert ScopedToken.objects.count() == before
    assert world.issue(key="eu-shared").status_code == 201  # the one of its region serves


def test_a_platform_token_stops_working_when_its_tenant_is_pinned_elsewhere(
    world, platform, regions
):
    tenant = world.actors.tenant_a
    _platform_key(platform)
    _set_policy(tenant, "platform_only")
    token = world.token()
    _pin(tenant, "us")
    assert client(token).post("/api/v1/exchange").status_code == 401
    assert AuditEvent.objects.get(action="credential.denied").details["reason"] == "residency"
    listed = client(world.actors.tokens["alice"]).get(f"/api/v1/tenants/{tenant.slug}").json()
    assert (listed["store"], listed["region"]) == ("us", "us")


def test_a_policy_change_ends_the_tokens_issued_before_it_for_good(world, platform):
    tenant = world.actors.tenant_a
    _platform_key(platform)
    _put_tenant_key_in(world, "revoked")
    _set_policy(tenant, "byok_preferred", fallback=True)
    token = world.token()
    _set_policy(tenant, "byok_preferred", fallback=False)  # no longer allowed: ended
    assert client(token).post("/api/v1/exchange").status_code == 401
    denied = AuditEvent.objects.get(action="credential.denied")
    assert denied.details["reason"] == "key_policy_changed"
    _set_policy(tenant, "byok_preferred", fallback=True)  # allowed again: still ended
    assert client(token).post("/api/v1/exchange").status_code == 401
    assert client(world.token()).post("/api/v1/exchange").status_code == 200


def test_only_admins_of_every_tenant_set_a_key_policy(world, platform):
    tenant = world.actors.tenant_a
    url = f"/api/v1/tenants/{tenant.slug}"
    bob = client(world.actors.tokens["bob"])  # a security admin of tenant A only
    for body in ({"key_policy": "platform_only"}, {"platform_fallback": True}):
        refused = bob.patch(url, body, format="json")
        assert refused.status_code == 403, refused.content
    assert Tenant.objects.get(pk=tenant.pk).key_policy == "byok_required"
    assert not AuditEvent.objects.filter(action="tenant.key_policy_changed").exists()
    assert AuditEvent.objects.filter(action="access.denied", tenant=tenant.slug).count() == 2
    assert bob.patch(url, {"name": "Renamed"}, format="json").status_code == 200


@pytest.mark.parametrize(
    "body", [{"status": "suspended"}, {"key_policy": "platform_only"}, {"platform_fallback": True}]
)
def test_the_platform_tenant_has_no_status_or_policy_to_change(world, platform, body):
    alice = client(world.actors.tokens["alice"])
    refused = alice.patch(f"/api/v1/tenants/{platform.slug}", body, format="json")
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"]["code"] == "platform_tenant"
    saved = Tenant.objects.get(pk=platform.pk)
    assert (saved.status, saved.key_policy, saved.platform_fallback) == (
        "active",
        "byok_required",
        False,
    )


def test_the_platform_tenant_shows_no_policy_and_no_region_of_its_own(world, platform):
    alice = client(world.actors.tokens["alice"])
    shown = alice.get(f"/api/v1/tenants/{platform.slug}").json()
    assert shown["platform"] is True
    assert [shown[f] for f in ("key_policy", "platform_fallback", "store", "region")] == [None] * 4
    listed = {t["slug"]: t for t in alice.get("/api/v1/tenants").json()["results"]}
    assert listed[platform.slug]["region"] is None
    assert listed[world.actors.tenant_a.slug]["key_policy"] == "byok_required"


def test_a_store_outage_reading_a_platform_key_is_recorded_in_the_tenants_chain(
    world, platform, settings
):
    shared, _ = _platform_key(platform)
    _set_policy(world.actors.tenant_a, "platform_only")
    token = world.token()
    ProviderKey.objects.filter(pk=shared.pk).update(store="gone")  # a store no longer there
    assert client(token).post("/api/v1/exchange").status_code == 503
    failed = AuditEvent.objects.get(action="credential.release_failed")
    assert failed.tenant == world.actors.tenant_a.slug
