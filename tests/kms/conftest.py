"""Fixtures of the rotations that reach the provider: tenant A's admin credential with a
key it rotates (the stub of OpenAI's Administration API is the suite's `admin_api`)."""

from __future__ import annotations

import pytest

from kms.models import ProviderKey
from tests.admin_stubs.openai import ADMIN_KEY, PROJECT
from tests.kms.helpers import onboard, openai_key


@pytest.fixture
def linked(world, default_store, provider_stub, admin_api):
    """Tenant A's admin credential for its OpenAI project, and a key it rotates."""
    alice = world.actors.as_("alice")
    slug = world.actors.tenant_a.slug
    admin = onboard(
        alice, slug, ADMIN_KEY, kind="admin", upstream={"project_id": PROJECT}, label="admin"
    )
    assert admin.status_code == 201, admin.content
    secret = openai_key()
    admin_api.add_key(secret)  # the key a person made at OpenAI and onboarded by hand
    key = onboard(alice, slug, secret, admin_credential=admin.json()["id"], label="rotated")
    assert key.status_code == 201, key.content
    return world, ProviderKey.objects.get(pk=key.json()["id"]), admin.json(), admin_api
