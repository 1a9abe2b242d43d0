"""The Vault policy the README documents is all Keyward needs (KV v2 under its own prefix,
its audit-signing key in Transit, its own token's renewal) and grants nothing beside it."""

from __future__ import annotations

from typing import Any

import hvac
import pytest

from auditor.archive import StoreArchive
from auditor.signing import KEYS
from stores.exceptions import SecretMissing
from stores.registry import get_store
from stores.vault import VaultStore
from tests.factories import rand
from tests.test_settings import ROOT


def readme_policy(kv_mount: str) -> str:
    section = (ROOT / "README.md").read_text().partition("### Vault policy")[2]
    hcl = section.partition("```hcl")[2].partition("```")[0]
    assert "path " in hcl, "the README's Vault policy block is gone"
    return hcl.replace('"secret/', f'"{kv_mount}/')


@pytest.fixture
def policy_token(bao: Any) -> str:
    client = bao.client()
    if "transit/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("transit")
    client.sys.create_or_update_policy("keyward-readme", readme_policy(bao.kv_mount))
    created = client.auth.token.create(
        policies=["keyward-readme"], no_default_policy=True, ttl="1h", renewable=True
    )
    return str(created["auth"]["client_token"])


def test_the_readme_policy_allows_everything_keyward_does(bao, policy_token, settings):
    settings.SECRET_STORES = {"default": bao.store_config(token=policy_token)}
    store = get_store()
    assert isinstance(store, VaultStore)
    path = f"{rand()}/{rand()}"
    assert store.put(path, "sk-first", expected_version=0) == 1
    assert store.put(path, "sk-second", expected_version=1) == 2
    assert store.get(path, 1) == "sk-first"
    assert [v.version for v in store.versions(path)] == [1, 2]
    store.destroy(path, [1])
    with pytest.raises(SecretMissing):
        store.get(path, 1)
    store._renew_at = 0  # due for renewal: renew-self and lookup-self
    assert store.get(path, 2) == "sk-second"
    for _, transit_key in KEYS.values():
        assert store.transit_sign(transit_key, b"a checkpoint")
        assert store.transit_public_key(transit_key)
    archive = StoreArchive(store)
    archive.replace("tenant:acme", "a checkpoint\n", None)
    assert archive.chains() == ["tenant:acme"]


def test_the_readme_policy_grants_nothing_outside_keywards_prefix(bao, policy_token):
    own = bao.client()
    own.secrets.kv.v2.create_or_update_secret(
        path=f"other-app/{rand()}", secret={"k": "v"}, mount_point=bao.kv_mount
    )
    limited = hvac.Client(url=bao.addr, token=policy_token)
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.secrets.kv.v2.list_secrets(path="other-app", mount_point=bao.kv_mount)
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.secrets.transit.sign_data(
            name="someone-else", hash_input="YQ==", mount_point="transit"
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.sys.list_mounted_secrets_engines()
