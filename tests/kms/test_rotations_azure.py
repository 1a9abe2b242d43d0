"""A rotation that reaches Azure OpenAI end to end, against a local Entra ID and Azure
Resource Manager: a service principal's client secret as the admin credential, each
rotation regenerating the key slot not in use (key1, then key2), the old slot regenerated
when its grace period ends, and refusals that leave the current version as it was."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from kms.models import KeyVersion, ProviderKey, Rotation, Stage
from stores.exceptions import SecretMissing
from stores.registry import get_store
from tests.admin_stubs.azure import (
    ACCOUNT,
    ARM_DOWN,
    BAD_SECRET,
    CLIENT_ID,
    FORBIDDEN,
    GROUP,
    SUBSCRIPTION,
    TENANT,
    THROTTLED,
    AzureStub,
)
from tests.kms.helpers import admin_api, assert_kept_secret, end_grace, onboard, rotate, settle
from tests.provider_stub import AZURE_INVALID

pytestmark = pytest.mark.django_db
CLIENT_SECRET = "Qx8Q~" + "kW3y" * 9


@pytest.fixture
def azure(settings: Any) -> Any:
    yield from admin_api(settings, "azure_openai", AzureStub(CLIENT_SECRET))


def _onboard_admin(world: Any, stub: AzureStub, client_secret: str) -> Any:
    """Tenant A's admin credential for the stub's resource, through the API."""
    return onboard(
        world.actors.as_("alice"),
        world.actors.tenant_a.slug,
        client_secret,
        provider="azure_openai",
        kind="admin",
        upstream={
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "subscription_id": SUBSCRIPTION,
            "resource_group": GROUP,
            "account_name": ACCOUNT,
            "login_base_url": stub.url,
        },
    )


@pytest.fixture
def linked(world, default_store, provider_stub, azure):
    """Tenant A's service principal for its Azure OpenAI resource, and the resource's key2
    onboarded by hand (the first rotation finds its slot by listing the resource's keys)."""
    alice, slug = world.actors.as_("alice"), world.actors.tenant_a.slug
    admin = _onboard_admin(world, azure, CLIENT_SECRET)
    assert admin.status_code == 201, admin.content
    assert len(azure.tokens) == 1 and not _regenerated(azure)  # checked, no key touched
    key = onboard(
        alice,
        slug,
        azure.keys["key2"],
        provider="azure_openai",
        admin_credential=admin.json()["id"],
    )
    assert key.status_code == 201, key.content
    return world, ProviderKey.objects.get(pk=key.json()["id"]), azure


def _regenerated(stub: AzureStub) -> list[str]:
    """The key names ARM was asked to regenerate, in order."""
    return [s.body.decode() for s in stub.seen if s.path.endswith("/regenerateKey")]


def _current(key: ProviderKey) -> KeyVersion:
    return KeyVersion.objects.get(key=key, stage=Stage.CURRENT)


def test_rotations_regenerate_the_slot_not_in_use_and_then_the_old_one(linked, caplog):
    caplog.set_level("DEBUG")
    world, key, stub = linked
    hand_made = stub.keys["key2"]
    first = rotate(world, key, grace_period_seconds=0)
    assert first["mode"] == "automated"
    assert settle(first["id"]).state == "retiring"
    one = _current(key)
    assert one.upstream_id == "key1" and one.version == 2
    assert get_store(key.store).get(key.store_path, 2) == stub.keys["key1"]
    assert stub.keys["key2"] == hand_made  # the key in use until now still works
    # The slot of the key a person onboarded was found by listing the resource's keys.
    assert KeyVersion.objects.get(key=key, version=1).upstream_id == "key2"
    assert end_grace() == 1
    assert stub.keys["key2"] != hand_made  # its slot regenerated: the old value is dead
    minted_first = stub.keys["key1"]
    second = rotate(world, key, grace_period_seconds=0)
    assert settle(second["id"]).state == "retiring"
    two = _current(key)
    assert two.upstream_id == "key2" and stub.keys["key1"] == minted_first
    minted_second = stub.keys["key2"]
    assert end_grace() == 1
    assert stub.keys["key1"] != minted_first  # the old slot regenerated: its value is dead
    assert stub.keys["key2"] == minted_second
    assert _regenerated(stub) == [
        '{"keyName":"Key1"}',
        '{"keyName":"Key2"}',
        '{"keyName":"Key2"}',
        '{"keyName":"Key1"}',
    ]
    assert [r.state for r in Rotation.objects.order_by("created_at")] == ["completed"] * 2
    assert not AuditEvent.objects.filter(action="key.upstream_retire_failed").exists()
    assert_kept_secret(
        world,
        key,
        [CLIENT_SECRET, hand_made, minted_first, minted_second, *stub.tokens],
        caplog.text,
    )


def test_a_key_onboarded_from_key1_is_not_regenerated_while_in_use(linked):
    world, _, stub = linked
    alice, slug = world.actors.as_("alice"), world.actors.tenant_a.slug
    admin = ProviderKey.objects.get(tenant=world.actors.tenant_a, kind="admin")
    in_use = stub.keys["key1"]
    made = onboard(
        alice, slug, in_use, provider="azure_openai", admin_credential=str(admin.pk), label="k1"
    )
    assert made.status_code == 201, made.content
    key = ProviderKey.objects.get(pk=made.json()["id"])
    rotation = rotate(world, key, grace_period_seconds=0)
    assert settle(rotation["id"]).state == "retiring"
    assert stub.keys["key1"] == in_use  # still works through its grace period
    assert _current(key).upstream_id == "key2"
    assert get_store(key.store).get(key.store_path, 2) == stub.keys["key2"]
    assert _regenerated(stub) == ['{"keyName":"Key2"}']


@pytest.mark.parametrize(
    ("status", "body", "headers", "state"),
    [
        (403, FORBIDDEN, {}, "failed"),
        (429, THROTTLED, {"Retry-After": "7"}, "creating"),
        (500, ARM_DOWN, {}, "creating"),
    ],
)
def test_an_arm_refusal_at_create_leaves_the_current_version(linked, status, body, headers, state):
    world, key, stub = linked
    before = dict(stub.keys)
    rotation = rotate(world, key)
    stub.fail("arm", status, body, headers)
    advanced = settle(rotation["id"])
    assert advanced.state == state
    if status == 429:
        assert advanced.retry_after == 7
    stored = Rotation.objects.get(pk=rotation["id"])
    if state == "failed":
        assert "AuthorizationFailed" in stored.failure
    else:
        assert "waiting" in str(stored.steps)
    assert stub.keys == before  # nothing regenerated
    assert list(KeyVersion.objects.filter(key=key).values_list("stage", flat=True)) == ["current"]
    key.refresh_from_db()
    assert key.current_version == 1


def test_a_refused_client_secret_at_create_fails_the_rotation_and_changes_nothing(linked):
    world, key, stub = linked
    before = dict(stub.keys)
    rotation = rotate(world, key)
    stub.fail("token", 401, BAD_SECRET)
    assert settle(rotation["id"]).state == "failed"
    assert "invalid_client" in Rotation.objects.get(pk=rotation["id"]).failure
    assert stub.keys == before
    assert KeyVersion.objects.filter(key=key).count() == 1


def test_a_new_key_azure_refuses_at_the_test_step_is_regenerated_and_destroyed(
    linked, provider_stub
):
    world, key, stub = linked
    rotation = rotate(world, key)
    provider_stub.answer(401, AZURE_INVALID)
    assert settle(rotation["id"]).state == "failed"
    pending = KeyVersion.objects.get(key=key, version=2)
    assert pending.stage == Stage.DESTROYED and pending.upstream_id == "key1"
    with pytest.raises(SecretMissing):
        get_store(key.store).get(key.store_path, 2)
    assert _regenerated(stub) == ['{"keyName":"Key1"}'] * 2  # minted, then retired
    key.refresh_from_db()
    assert key.current_version == 1 and _current(key).version == 1


def test_a_client_secret_entra_refuses_is_not_onboarded(world, azure):
    response = _onboard_admin(world, azure, "Qx8Q~" + "n0pe" * 9)
    assert response.status_code == 422, response.content
    assert "invalid_client" in response.content.decode()
    assert not ProviderKey.objects.filter(kind="admin").exists()
    assert not _regenerated(azure)
