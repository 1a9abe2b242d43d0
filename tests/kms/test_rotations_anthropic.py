"""A rotation that reaches Anthropic end to end, against a local Admin API: Anthropic
cannot create keys, so a person supplies the new one (a rotation without it is refused),
and the old key is made inactive there when its grace period ends; a refusal to do so is
audited, and a rate limit is tried again by the job."""

from __future__ import annotations

import secrets
import string
from typing import Any

import pytest

from audit.models import AuditEvent
from kms import jobs
from kms.models import KeyVersion, ProviderKey, Rotation, Stage
from kms.providers.admin import AdminError
from stores.exceptions import SecretMissing
from stores.registry import get_store
from tests.admin_stubs.anthropic import ADMIN_KEY, PERMISSION, RATE_LIMIT, AnthropicStub
from tests.admin_stubs.routed import body_of
from tests.kms.helpers import admin_api, assert_kept_secret, end_grace, onboard, rotate, settle
from tests.provider_stub import ANTHROPIC_INVALID

pytestmark = pytest.mark.django_db


def anthropic_key() -> str:
    return "sk-ant-api03-" + "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(40)
    )


@pytest.fixture
def anthropic(settings: Any) -> Any:
    yield from admin_api(settings, "anthropic", AnthropicStub())


def _onboard_admin(world: Any, secret: str) -> Any:
    """Tenant A's Admin API key, through the API."""
    api, slug = world.actors.as_("alice"), world.actors.tenant_a.slug
    return onboard(api, slug, secret, provider="anthropic", kind="admin", upstream={})


@pytest.fixture
def linked(world, default_store, provider_stub, anthropic):
    """Tenant A's Admin API key, and a key made by hand at Anthropic and onboarded."""
    alice, slug = world.actors.as_("alice"), world.actors.tenant_a.slug
    admin = _onboard_admin(world, ADMIN_KEY)
    assert admin.status_code == 201, admin.content
    [checked] = anthropic.requests("GET")  # one page of the keys: the Admin API key works
    assert checked.path == "/v1/organizations/api_keys"
    hand_made = anthropic_key()
    upstream = anthropic.add_key(hand_made[-4:])
    key = onboard(alice, slug, hand_made, provider="anthropic", admin_credential=admin.json()["id"])
    assert key.status_code == 201, key.content
    return world, ProviderKey.objects.get(pk=key.json()["id"]), anthropic, upstream, hand_made


def _supplied(stub: AnthropicStub) -> tuple[str, str]:
    """A new key a person made at Anthropic: its secret and its id there."""
    secret = anthropic_key()
    return secret, stub.add_key(secret[-4:])


def test_a_rotation_without_a_secret_is_refused_and_changes_nothing(linked):
    world, key, stub, *_ = linked
    events = AuditEvent.objects.count()
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotations"
    response = world.actors.as_("alice").post(url, {"grace_period_seconds": 0}, format="json")
    assert response.status_code == 400, response.content
    assert "secret" in response.json()["error"]["fields"]
    assert not Rotation.objects.filter(key=key).exists()
    assert KeyVersion.objects.filter(key=key).count() == 1
    assert AuditEvent.objects.count() == events
    assert len(stub.seen) == 1  # the Admin API key's check when it was onboarded


def test_the_old_key_is_made_inactive_at_anthropic_when_its_grace_ends(linked, caplog):
    caplog.set_level("DEBUG")
    world, key, stub, upstream, hand_made = linked
    new, new_id = _supplied(stub)
    rotation = rotate(world, key, secret=new, grace_period_seconds=0)
    assert rotation["mode"] == "manual"
    assert settle(rotation["id"]).state == "retiring"
    current = KeyVersion.objects.get(key=key, stage=Stage.CURRENT)
    assert current.version == 2
    assert get_store(key.store).get(key.store_path, 2) == new
    assert stub.keys[upstream]["status"] == "active"  # in use until the grace ends
    assert end_grace() == 1
    assert stub.keys[upstream]["status"] == "inactive"
    assert stub.keys[new_id]["status"] == "active"
    [updated] = stub.requests("POST")
    assert updated.path == f"/v1/organizations/api_keys/{upstream}"
    assert body_of(updated) == {"status": "inactive"}
    assert Rotation.objects.get(pk=rotation["id"]).state == "completed"
    assert not AuditEvent.objects.filter(action="key.upstream_retire_failed").exists()
    assert_kept_secret(world, key, [ADMIN_KEY, hand_made, new], caplog.text)


def test_a_refused_update_is_audited_and_the_version_retired_here(linked):
    world, key, stub, upstream, _ = linked
    rotation = rotate(world, key, secret=_supplied(stub)[0], grace_period_seconds=0)
    assert settle(rotation["id"]).state == "retiring"
    stub.fail(403, PERMISSION, path=f"/api_keys/{upstream}", method="POST")
    assert end_grace() == 1
    refused = AuditEvent.objects.get(action="key.upstream_retire_failed", target=f"key:{key.pk}")
    assert refused.details["version"] == 1 and refused.details["upstream_id"] == ""
    assert "permission" in refused.details["reason"]
    assert stub.keys[upstream]["status"] == "active"  # said: the old key may still work
    assert KeyVersion.objects.get(key=key, version=1).stage == Stage.DESTROYED
    assert Rotation.objects.get(pk=rotation["id"]).state == "completed"


def test_a_rate_limited_update_is_tried_again_by_the_job(linked):
    world, key, stub, upstream, _ = linked
    rotation = rotate(world, key, secret=_supplied(stub)[0], grace_period_seconds=0)
    assert settle(rotation["id"]).state == "retiring"
    stub.fail(429, RATE_LIMIT, path=f"/api_keys/{upstream}", method="POST")
    [due] = jobs.due_versions()
    with pytest.raises(AdminError):
        jobs.retire_version(due)
    assert KeyVersion.objects.get(pk=due).stage == Stage.PREVIOUS
    assert not AuditEvent.objects.filter(action="key.upstream_retire_failed").exists()
    assert end_grace() == 1
    assert stub.keys[upstream]["status"] == "inactive"
    assert Rotation.objects.get(pk=rotation["id"]).state == "completed"


def test_a_new_key_anthropic_refuses_at_the_test_step_is_destroyed(linked, provider_stub):
    world, key, stub, *_ = linked
    rotation = rotate(world, key, secret=_supplied(stub)[0])
    provider_stub.answer(401, ANTHROPIC_INVALID)
    assert settle(rotation["id"]).state == "failed"
    assert KeyVersion.objects.get(key=key, version=2).stage == Stage.DESTROYED
    with pytest.raises(SecretMissing):
        get_store(key.store).get(key.store_path, 2)
    key.refresh_from_db()
    assert key.current_version == 1
    assert {k["status"] for k in stub.keys.values()} == {"active"}  # nothing asked of it
    assert stub.requests("POST") == []


def test_an_admin_key_anthropic_refuses_is_not_onboarded(world, anthropic):
    response = _onboard_admin(world, "sk-ant-admin01-" + "wr0ng" * 16)
    assert response.status_code == 422, response.content
    assert "invalid x-api-key" in response.content.decode()
    assert not ProviderKey.objects.filter(kind="admin").exists()
