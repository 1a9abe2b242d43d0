"""A rotation that reaches OpenRouter end to end, against a stub of its key management
API: the provider creates the new key, the hand-made one cannot be retired there (OpenRouter
finds keys by hash only) and says so in the audit log, and a key Keyward created is disabled
and deleted there when its grace period ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from kms import jobs
from kms.actions import keys
from kms.models import KeyVersion, ProviderKey, Stage
from tests import provider_stub as docs
from tests.admin_stubs.openrouter import OpenRouterStub, new_key
from tests.kms.helpers import onboard

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


def _rotate(world: Any, key: ProviderKey) -> str:
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotations"
    response = world.actors.as_("alice").post(url, {"grace_period_seconds": 0}, format="json")
    assert response.status_code == 202, response.content
    return str(response.json()["id"])


def test_openrouter_creates_the_new_key_and_retires_the_ones_keyward_made(
    world, default_store, provider_stub, openrouter
):
    provider_stub.answer(200, docs.OPENROUTER_UNLIMITED)  # GET /key: the key works
    alice, slug = world.actors.as_("alice"), world.actors.tenant_a.slug
    admin = onboard(alice, slug, MANAGEMENT_KEY, provider="openrouter", kind="admin")
    assert admin.status_code == 201, admin.content
    key = onboard(
        alice, slug, new_key(), provider="openrouter", admin_credential=admin.json()["id"]
    )
    assert key.status_code == 201, key.content
    row = ProviderKey.objects.get(pk=key.json()["id"])
    first = _rotate(world, row)
    assert jobs.advance_rotation(first).state == "retiring"
    [made] = [h for h, k in openrouter.keys.items() if k["name"] == f"keyward-{first}"]
    assert KeyVersion.objects.get(key=row, stage=Stage.CURRENT).upstream_id == made
    later = timezone.now() + timedelta(seconds=1)
    hand_made = KeyVersion.objects.get(key=row, version=1)
    assert keys.do_retire_version(hand_made.pk, actor=jobs.JOBS, now=later)
    refused = AuditEvent.objects.filter(action="key.upstream_retire_failed", target=f"key:{row.pk}")
    assert refused.count() == 1  # no hash for a key a person made: said, not guessed
    second = _rotate(world, row)
    assert jobs.advance_rotation(second).state == "retiring"
    previous = KeyVersion.objects.get(key=row, upstream_id=made)
    assert keys.do_retire_version(previous.pk, actor=jobs.JOBS, now=later)
    assert made not in openrouter.keys  # disabled, then deleted at OpenRouter
    assert MANAGEMENT_KEY not in str(list(AuditEvent.objects.values_list("details", flat=True)))
