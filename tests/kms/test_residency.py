"""Data residency: a tenant pinned to a secret store has its keys written only there, is
pinned only when nothing needs moving, and platform keys serve it from its region only.

Two OpenBao servers stand for two regions (the `two_regions` fixture): each is read
directly to show where a secret is, and where it is not."""

from __future__ import annotations

from typing import Any

import hvac.exceptions
import pytest

from audit.models import AuditEvent
from kms.actions import keys, moves, retirement
from kms.exceptions import ResidencyRefused
from kms.models import KeyStatus, ProviderKey
from stores.models import LocalSecret
from tenants.actions import do_create_grant, do_create_tenant, do_update_tenant
from tenants.models import Tenant
from tests.factories import client, make_principal
from tests.kms.helpers import onboard, openai_key
from tests.kms.world import SYSTEM

pytestmark = pytest.mark.django_db


def _secrets_in(server: Any, prefix: str, tenant: Tenant) -> dict[str, str]:
    """What one server holds for a tenant, read directly: key id -> current secret."""
    kv = server.client().secrets.kv.v2
    try:
        listed = kv.list_secrets(path=f"{prefix}/{tenant.id}", mount_point=server.kv_mount)
    except hvac.exceptions.InvalidPath:
        return {}
    held = {}
    for name in listed["data"]["keys"]:
        read = kv.read_secret_version(
            path=f"{prefix}/{tenant.id}/{name}",
            mount_point=server.kv_mount,
            raise_on_deleted_version=False,
        )
        data = read["data"]["data"]
        held[name] = next(iter(data.values())) if data else ""
    return held


def _pin(actor: Any, tenant: Tenant, store: str | None, **more: Any) -> Any:
    return actor.patch(f"/api/v1/tenants/{tenant.slug}", {"store": store, **more}, format="json")


@pytest.fixture
def regions(actors: Any, two_regions: Any) -> Any:
    return two_regions


# -- onboarding --------------------------------------------------------------------------
def test_a_pinned_tenants_keys_exist_only_in_its_regions_server(actors, regions):
    eu, us, prefix = regions
    alice, tenant = actors.as_("alice"), actors.tenant_a
    assert _pin(alice, tenant, "us").status_code == 200
    secret = openai_key()
    created = onboard(alice, tenant.slug, secret, validate=False)
    assert created.status_code == 201, created.content
    assert (created.json()["store"], created.json()["region"]) == ("us", "us")
    event = AuditEvent.objects.get(action="key.created", target=f"key:{created.json()['id']}")
    assert (event.details["store"], event.details["region"]) == ("us", "us")
    assert _secrets_in(us, prefix, tenant) == {created.json()["id"]: secret}
    assert _secrets_in(eu, prefix, tenant) == {}
    rotated = alice.post(
        f"/api/v1/tenants/{tenant.slug}/keys/{created.json()['id']}/rotate?validate=false",
        {"secret": (new := openai_key())},
        format="json",
    )
    assert rotated.status_code == 200, rotated.content
    assert _secrets_in(us, prefix, tenant) == {created.json()["id"]: new}
    assert _secrets_in(eu, prefix, tenant) == {}


def test_onboarding_a_pinned_tenants_key_into_another_store_is_refused_storing_nothing(
    actors, regions, provider_stub
):
    eu, us, prefix = regions
    alice, tenant = actors.as_("alice"), actors.tenant_a
    assert _pin(alice, tenant, "us").status_code == 200
    refused = onboard(alice, tenant.slug, store="default")
    assert refused.status_code == 409, refused.content
    assert refused.json()["error"]["code"] == "residency_refused"
    assert "pinned to the secret store 'us'" in refused.json()["error"]["message"]
    assert provider_stub.seen == []  # refused before the provider is asked
    assert not ProviderKey.objects.filter(tenant=tenant).exists()
    assert _secrets_in(us, prefix, tenant) == _secrets_in(eu, prefix, tenant) == {}
    event = AuditEvent.objects.get(action="key.onboard_refused")
    assert (event.outcome, event.tenant) == ("denied", tenant.slug)
    assert {k: event.details[k] for k in ("reason", "store", "region", "tenant_region")} == {
        "reason": "residency",
        "store": "default",
        "region": "eu",
        "tenant_region": "us",
    }


def test_an_unknown_store_is_refused_and_nothing_is_stored(actors, regions):
    eu, us, prefix = regions
    tenant = actors.tenant_a
    refused = onboard(actors.as_("alice"), tenant.slug, validate=False, store="mars")
    assert refused.status_code == 400, refused.content
    assert "Unknown secret store" in refused.json()["error"]["fields"]["store"][0]
    assert not ProviderKey.objects.filter(tenant=tenant).exists()
    assert _secrets_in(us, prefix, tenant) == _secrets_in(eu, prefix, tenant) == {}


def test_an_unpinned_tenant_names_any_store_and_defaults_to_the_default_one(actors, regions):
    eu, us, prefix = regions
    alice, tenant = actors.as_("alice"), actors.tenant_a
    there = onboard(alice, tenant.slug, (us_secret := openai_key()), validate=False, store="us")
    here = onboard(alice, tenant.slug, (eu_secret := openai_key()), validate=False)
    assert (there.json()["store"], here.json()["store"]) == ("us", "default")
    assert (there.json()["region"], here.json()["region"]) == ("us", "eu")
    assert _secrets_in(us, prefix, tenant) == {there.json()["id"]: us_secret}
    assert _secrets_in(eu, prefix, tenant) == {here.json()["id"]: eu_secret}


def test_platform_keys_of_each_region_serve_the_tenants_pinned_there(actors, regions):
    eu, us, prefix = regions
    alice = actors.as_("alice")
    platform = do_create_tenant("platform", "The platform", platform=True, actor=SYSTEM)
    placed = {}
    for store in ("default", "us"):
        made = onboard(alice, platform.slug, (secret := openai_key()), validate=False, store=store)
        assert made.status_code == 201, made.content
        placed[store] = secret
    assert list(_secrets_in(eu, prefix, platform).values()) == [placed["default"]]
    assert list(_secrets_in(us, prefix, platform).values()) == [placed["us"]]
    principal, secret = make_principal()
    for tenant, store in ((actors.tenant_a, "us"), (actors.tenant_b, "default")):
        assert _pin(alice, tenant, store).status_code == 200
        do_update_tenant(tenant, key_policy="platform_only", actor=SYSTEM)
        do_create_grant(principal, tenant, "openai", ["release"], 900, actor=SYSTEM)
        issued = client(secret).post(
            "/api/v1/tokens",
            {"tenant": tenant.slug, "provider": "openai", "scopes": ["release"]},
            format="json",
        )
        assert issued.status_code == 201, issued.content
        released = client(issued.json()["token"]).post("/api/v1/exchange")
        assert released.status_code == 200, released.content
        assert released.json()["credential_source"] == "platform"
        assert released.json()["api_key"] == placed[store]


# -- pinning -----------------------------------------------------------------------------
@pytest.fixture
def local_regions(actors: Any, settings: Any) -> None:
    settings.SECRET_STORES = {
        "default": {"backend": "local", "region": "eu"},
        "us": {"backend": "local", "region": "us"},
    }


def _key_of(tenant: Tenant, store: str = "default") -> ProviderKey:
    return keys.do_onboard_key(
        tenant,
        keys.KeyInput("openai", "prod", openai_key(), store=store),
        validate=False,
        actor=SYSTEM,
    )


def test_pinning_a_tenant_without_keys_is_audited_with_both_stores_and_regions(
    actors, local_regions
):
    tenant = actors.tenant_a
    pinned = _pin(actors.as_("bob"), tenant, "us")
    assert pinned.status_code == 200, pinned.content
    assert (pinned.json()["store"], pinned.json()["region"]) == ("us", "us")
    event = AuditEvent.objects.get(action="tenant.store_pinned")
    assert (event.tenant, event.target) == (tenant.slug, f"tenant:{tenant.slug}")
    assert event.details == {"store": [None, "us"], "region": ["eu", "us"]}
    assert _key_of(Tenant.objects.get(pk=tenant.pk), "us").store == "us"
    unpinned = _pin(actors.as_("bob"), tenant, None)
    assert (unpinned.json()["store"], unpinned.json()["region"]) == (None, "eu")
    event = AuditEvent.objects.get(action="tenant.store_unpinned")
    assert event.details == {"store": ["us", None], "region": ["us", "eu"]}
    assert ProviderKey.objects.get(tenant=tenant).store == "us"  # unpinning moves nothing


def test_pinning_a_tenant_with_live_keys_elsewhere_is_refused_naming_the_move(
    actors, local_regions
):
    tenant = actors.tenant_a
    _key_of(tenant)
    refused = _pin(actors.as_("alice"), tenant, "us", name="Renamed")
    assert refused.status_code == 409, refused.content
    error = refused.json()["error"]
    assert error["code"] == "tenant_has_keys"
    assert f"POST /api/v1/tenants/{tenant.slug}/moves" in error["message"]
    assert "default" in error["message"]
    after = Tenant.objects.get(pk=tenant.pk)
    assert (after.store, after.name) == ("", tenant.name)
    assert not AuditEvent.objects.filter(action__in=["tenant.store_pinned", "tenant.updated"])
    event = AuditEvent.objects.get(action="tenant.store_pin_refused")
    assert (event.outcome, event.details["keys_in"]) == ("denied", ["default"])


def test_pinning_to_the_store_its_keys_already_live_in_is_allowed(actors, local_regions):
    tenant = actors.tenant_a
    _key_of(tenant, "us")
    pinned = _pin(actors.as_("alice"), tenant, "us")
    assert pinned.status_code == 200, pinned.content
    assert Tenant.objects.get(pk=tenant.pk).store == "us"


def test_a_revoked_key_holds_a_tenant_back_until_its_secrets_are_destroyed(actors, local_regions):
    tenant = actors.tenant_a
    key = _key_of(tenant)
    # Revoked while the store could not destroy its versions: the secret is still there.
    ProviderKey.objects.filter(pk=key.pk).update(status=KeyStatus.REVOKED)
    assert _pin(actors.as_("alice"), tenant, "us").status_code == 409
    retirement.do_revoke_key(ProviderKey.objects.get(pk=key.pk), actor=SYSTEM)
    assert ProviderKey.objects.get(pk=key.pk).secrets_destroyed_at is not None
    assert _pin(actors.as_("alice"), tenant, "us").status_code == 200


@pytest.mark.parametrize(("store", "code"), [("mars", "invalid"), ("", "invalid"), (7, "invalid")])
def test_pinning_to_something_not_a_configured_store_is_refused(actors, local_regions, store, code):
    tenant = actors.tenant_a
    refused = _pin(actors.as_("alice"), tenant, store)
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"]["code"] == code
    assert "store" in refused.json()["error"]["fields"]
    assert Tenant.objects.get(pk=tenant.pk).store == ""
    assert not AuditEvent.objects.filter(action__startswith="tenant.store")


def test_the_platform_tenant_is_never_pinned(actors, local_regions):
    platform = do_create_tenant("platform", "The platform", platform=True, actor=SYSTEM)
    refused = _pin(actors.as_("alice"), platform, "us")
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"]["code"] == "platform_tenant"
    assert "placed" in refused.json()["error"]["message"]
    assert Tenant.objects.get(pk=platform.pk).store == ""


@pytest.mark.parametrize(("who", "status"), [("bob", 404), ("carol", 403), ("charlie", 403)])
def test_only_security_admins_of_the_tenant_pin_it(actors, local_regions, who, status):
    tenant = actors.tenant_b  # bob administers tenant A only
    refused = _pin(actors.as_(who), tenant, "us")
    assert refused.status_code == status, refused.content
    assert Tenant.objects.get(pk=tenant.pk).store == ""
    assert not AuditEvent.objects.filter(action="tenant.store_pinned")


def test_a_pin_made_while_a_secret_is_written_refuses_that_key_and_destroys_it(
    actors, local_regions
):
    """The pin is read again under the tenant's row lock before the key is registered:
    here the pin lands after the placement was decided (as a concurrent PATCH would)."""
    tenant = actors.tenant_a
    stale = Tenant.objects.get(pk=tenant.pk)  # loaded before the pin, as a slow request's
    assert _pin(actors.as_("alice"), tenant, "us").status_code == 200
    with pytest.raises(ResidencyRefused):
        keys.do_onboard_key(
            stale, keys.KeyInput("openai", "late", openai_key()), validate=False, actor=SYSTEM
        )
    assert not ProviderKey.objects.filter(tenant=tenant).exists()
    # Purged, not just destroyed: the refused key's path is left with no trace.
    assert not LocalSecret.objects.filter(path__startswith=f"{tenant.id}/").exists()
    event = AuditEvent.objects.get(action="key.onboard_refused")
    assert (event.details["store"], event.details["tenant_store"]) == ("default", "us")


def test_an_unpinned_tenant_whose_keys_sit_in_another_store_can_move_to_the_default_one(
    actors, local_regions
):
    tenant = actors.tenant_a
    key = _key_of(tenant, "us")
    alice = actors.as_("alice")
    refused = _pin(alice, tenant, "default")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "tenant_has_keys"
    started = alice.post(
        f"/api/v1/tenants/{tenant.slug}/moves", {"store": "default"}, format="json"
    )
    assert started.status_code == 202, started.content
    assert moves.do_advance_move(started.json()["id"], actor=SYSTEM).state == "completed"
    assert ProviderKey.objects.get(pk=key.pk).store == "default"
    assert Tenant.objects.get(pk=tenant.pk).store == "default"


def test_a_store_removed_from_configuration_fails_closed_with_a_clear_503(
    actors, local_regions, settings
):
    tenant = actors.tenant_a
    key = _key_of(tenant, "us")
    Tenant.objects.filter(pk=tenant.pk).update(store="us")
    settings.SECRET_STORES = {"default": {"backend": "local", "region": "eu"}}
    alice = actors.as_("alice")
    refused = onboard(alice, tenant.slug, validate=False)
    assert refused.status_code == 503, refused.content
    assert "'us' is not configured" in refused.json()["error"]["message"]
    assert list(ProviderKey.objects.filter(tenant=tenant)) == [key]
    rotated = alice.post(
        f"/api/v1/tenants/{tenant.slug}/keys/{key.pk}/rotate",
        {"secret": openai_key(), "grace_period_seconds": 0},
        format="json",
    )
    assert rotated.status_code == 503, rotated.content
    assert ProviderKey.objects.get(pk=key.pk).current_version == 1
