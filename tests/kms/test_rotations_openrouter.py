"""A rotation that reaches OpenRouter end to end, against a stub of its key management
API: the provider creates the new key, the hand-made one cannot be retired there (OpenRouter
finds keys by hash only) and says so in the audit log, and a key Keyward created is disabled
and deleted there when its grace period ends; OpenRouter's refusals leave the current
version, and a new key that fails the test step is deleted there and destroyed here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from kms import jobs
from kms.actions import retirement
from kms.models import KeyVersion, ProviderKey, Rotation, Stage
from stores.exceptions import SecretMissing
from stores.registry import get_store
from tests import provider_stub as docs
from tests.admin_stubs.openrouter import (
    FORBIDDEN,
    RATE_LIMITED,
    SERVER_ERROR,
    UNAUTHORIZED,
    OpenRouterStub,
    new_key,
)
from tests.kms.helpers import onboard, settle

pytestmark = pytest.mark.django_db
MANAGEMENT_KEY = "sk-or-v1-" + "5a" * 32


@pytest.fixture
def openrouter(settings: Any) -> Any:
    stub = OpenRouterStub(MANAGEMENT_KEY)
    settings.PROVIDER_ADMIN_BASE_URLS = {"openrouter": stub.url}
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def linked(world, default_store, provider_stub, openrouter):
    """Tenant A's management key, and a key made by hand that it rotates."""
    provider_stub.answer(200, docs.OPENROUTER_UNLIMITED)  # GET /key: the key works
    alice, slug = world.actors.as_("alice"), world.actors.tenant_a.slug
    admin = onboard(alice, slug, MANAGEMENT_KEY, provider="openrouter", kind="admin")
    assert admin.status_code == 201, admin.content
    key = onboard(
        alice, slug, new_key(), provider="openrouter", admin_credential=admin.json()["id"]
    )
    assert key.status_code == 201, key.content
    return world, ProviderKey.objects.get(pk=key.json()["id"])


def _only_the_first_version(key: ProviderKey) -> None:
    assert list(KeyVersion.objects.filter(key=key).values_list("stage", flat=True)) == ["current"]
    key.refresh_from_db()
    assert key.current_version == 1


def _rotate(world: Any, key: ProviderKey) -> str:
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotations"
    response = world.actors.as_("alice").post(url, {"grace_period_seconds": 0}, format="json")
    assert response.status_code == 202, response.content
    return str(response.json()["id"])


def test_openrouter_creates_the_new_key_and_retires_the_ones_keyward_made(linked, openrouter):
    world, row = linked
    first = _rotate(world, row)
    assert jobs.advance_rotation(first).state == "retiring"
    [made] = [h for h, k in openrouter.keys.items() if k["name"] == f"keyward-{first}"]
    assert KeyVersion.objects.get(key=row, stage=Stage.CURRENT).upstream_id == made
    later = timezone.now() + timedelta(seconds=1)
    hand_made = KeyVersion.objects.get(key=row, version=1)
    assert retirement.do_retire_version(hand_made.pk, actor=jobs.JOBS, now=later)
    refused = AuditEvent.objects.filter(action="key.upstream_retire_failed", target=f"key:{row.pk}")
    assert refused.count() == 1  # no hash for a key a person made: said, not guessed
    second = _rotate(world, row)
    assert jobs.advance_rotation(second).state == "retiring"
    previous = KeyVersion.objects.get(key=row, upstream_id=made)
    assert retirement.do_retire_version(previous.pk, actor=jobs.JOBS, now=later)
    assert made not in openrouter.keys  # disabled, then deleted at OpenRouter
    assert MANAGEMENT_KEY not in str(list(AuditEvent.objects.values_list("details", flat=True)))


@pytest.mark.parametrize(
    ("status", "body", "headers", "state"),
    [
        (401, UNAUTHORIZED, {}, "failed"),
        (403, FORBIDDEN, {}, "failed"),
        (429, RATE_LIMITED, {"Retry-After": "7"}, "creating"),
        (500, SERVER_ERROR, {}, "creating"),
    ],
)
def test_a_refusal_to_create_the_key_leaves_the_current_version(
    linked, openrouter, status, body, headers, state
):
    world, key = linked
    rotation = _rotate(world, key)
    openrouter.fail(status, body, headers)
    advanced = settle(rotation)
    assert advanced.state == state
    if status == 429:
        assert advanced.retry_after == 7
    if state == "failed":
        assert Rotation.objects.get(pk=rotation).failure
    assert openrouter.keys == {}  # nothing created
    _only_the_first_version(key)


def test_a_new_key_openrouter_refuses_at_the_test_step_is_deleted_and_destroyed(
    linked, openrouter, provider_stub
):
    world, key = linked
    rotation = _rotate(world, key)
    provider_stub.answer(401, docs.OPENROUTER_INVALID)  # GET /key with the new key
    assert settle(rotation).state == "failed"
    pending = KeyVersion.objects.get(key=key, version=2)
    assert pending.stage == Stage.DESTROYED
    assert pending.upstream_id and pending.upstream_id not in openrouter.keys  # deleted there
    with pytest.raises(SecretMissing):
        get_store(key.store).get(key.store_path, 2)
    _only_the_first_version_current(key)


def _only_the_first_version_current(key: ProviderKey) -> None:
    key.refresh_from_db()
    assert key.current_version == 1
    assert KeyVersion.objects.get(key=key, stage=Stage.CURRENT).version == 1
