"""A stopped, sealed or slow Vault behind the key endpoints: 503, Retry-After, an error
event, nothing written anywhere else, no fallback (security.md rule 13)."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from kms import jobs, tasks
from kms.models import ProviderKey
from stores.models import LocalSecret
from stores.registry import get_store
from tests import bao as servers
from tests.kms.helpers import onboard, openai_key

pytestmark = pytest.mark.django_db


def _assert_store_refusal(response):
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "secret_store_unavailable"
    assert int(response["Retry-After"]) > 0


@pytest.fixture
def unreachable(settings):
    settings.SECRET_STORES = {
        "default": {
            "backend": "vault",
            "addr": f"http://127.0.0.1:{servers.free_port()}",
            "token": "t",
            "timeout": 0.5,
        }
    }


def test_onboarding_with_the_store_down_fails_closed(actors, provider_stub, unreachable):
    response = onboard(actors.as_("alice"), actors.tenant_a.slug)
    _assert_store_refusal(response)
    assert not ProviderKey.objects.exists()
    assert not LocalSecret.objects.exists(), "no fallback to the local store"
    event = AuditEvent.objects.get(action="key.onboard_failed")
    assert event.outcome == "error" and event.tenant == actors.tenant_a.slug


def test_validate_rotate_and_revoke_with_the_store_sealed(
    actors, provider_stub, bao_raft, settings
):
    settings.SECRET_STORES = {
        "default": bao_raft.store_config(path_prefix="sealed-" + actors.tenant_a.slug)
    }
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    key = onboard(api, slug).json()
    url = f"/api/v1/tenants/{slug}/keys/{key['id']}"
    servers.seal(bao_raft)
    try:
        _assert_store_refusal(api.post(f"{url}/validate"))
        _assert_store_refusal(api.post(f"{url}/rotate", {"secret": openai_key()}, format="json"))
        row = ProviderKey.objects.get(pk=key["id"])
        assert row.current_version == 1 and row.versions.count() == 1
        revoked = api.delete(url)
        assert revoked.status_code == 202, revoked.content
        assert revoked.json()["status"] == "revoked"
        assert revoked.json()["secrets_destroyed"] is False
        row.refresh_from_db()
        assert row.status == "revoked", "a revocation takes effect even while the store is sealed"
        assert row.secrets_destroyed_at is None
        assert jobs.keys_awaiting_destruction() == [key["id"]]
        assert jobs.destroy_key_secrets(key["id"]) is False, "still sealed: tried, not done"
        assert not LocalSecret.objects.exists()
    finally:
        servers.unseal(bao_raft)
    actions = list(AuditEvent.objects.filter(outcome="error").values_list("action", flat=True))
    assert {"key.validate_failed", "key.rotate_failed", "key.destroy_failed"} <= set(actions)
    assert actions.count("key.destroy_failed") == 2
    for key_id in jobs.keys_awaiting_destruction():  # what the retire_versions sweep enqueues
        tasks.destroy_key_secrets(key_id)
    row = ProviderKey.objects.get(pk=key["id"])
    assert row.secrets_destroyed_at is not None
    assert jobs.keys_awaiting_destruction() == []
    assert [v.destroyed for v in get_store().versions(row.store_path)] == [True]
    assert AuditEvent.objects.filter(action="key.secrets_destroyed").count() == 1
    assert api.delete(url).status_code == 204, "revoking again changes nothing and says so"


def test_a_slow_store_fails_closed(actors, provider_stub, settings):
    silent = servers.SilentServer()
    try:
        settings.SECRET_STORES = {
            "default": {"backend": "vault", "addr": silent.addr, "token": "t", "timeout": 0.3}
        }
        _assert_store_refusal(onboard(actors.as_("alice"), actors.tenant_a.slug))
    finally:
        silent.close()
    assert not ProviderKey.objects.exists()


def test_readyz_names_a_sealed_store(client, bao_raft, settings):
    settings.SECRET_STORES = {"default": bao_raft.store_config()}
    servers.seal(bao_raft)
    try:
        response = client.get("/readyz")
    finally:
        servers.unseal(bao_raft)
    assert response.status_code == 503
    assert "secret_store" in response.json()["down"]
