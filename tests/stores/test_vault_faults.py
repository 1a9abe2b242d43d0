"""A sealed, stopped, unreachable or slow Vault: the store fails closed, never falls back."""

from __future__ import annotations

import asyncio

import pytest

from stores.exceptions import StoreUnavailable
from stores.registry import get_store
from stores.vault import VaultStore
from tests import bao as servers
from tests.factories import rand

OPERATIONS = {
    "put": lambda s, p: s.put(p, "sk-x", expected_version=0),
    "get": lambda s, p: s.get(p, 1),
    "aget": lambda s, p: asyncio.run(s.aget(p, 1)),
    "versions": lambda s, p: s.versions(p),
    "destroy": lambda s, p: s.destroy(p, [1]),
}


def _assert_fails_closed(store):
    for name, operation in OPERATIONS.items():
        with pytest.raises(StoreUnavailable):
            operation(store, f"{rand()}/{rand()}")
            pytest.fail(f"{name} did not fail closed")
    assert store.health() is False


def test_a_sealed_vault_fails_closed_and_recovers_when_unsealed(bao_raft, settings):
    settings.SECRET_STORES = {"default": bao_raft.store_config()}
    store = get_store()
    path = f"{rand()}/{rand()}"
    store.put(path, "sk-before-seal", expected_version=0)
    servers.seal(bao_raft)
    try:
        _assert_fails_closed(store)
    finally:
        servers.unseal(bao_raft)
    assert store.get(path, 1) == "sk-before-seal"
    assert store.health() is True


def test_a_stopped_vault_fails_closed(tmp_path, settings):
    server = servers.start_dev_server(tmp_path)
    settings.SECRET_STORES = {"default": server.store_config()}
    store = get_store()
    store.put(f"{rand()}/{rand()}", "sk-x", expected_version=0)
    server.stop()
    _assert_fails_closed(store)


def test_an_unreachable_vault_fails_closed(settings):
    settings.SECRET_STORES = {
        "default": {
            "backend": "vault",
            "addr": f"http://127.0.0.1:{servers.free_port()}",
            "token": "t",
            "timeout": 1.0,
        }
    }
    _assert_fails_closed(get_store())


def test_a_slow_vault_fails_closed_within_the_timeout(settings):
    import time

    silent = servers.SilentServer()
    try:
        settings.SECRET_STORES = {
            "default": {"backend": "vault", "addr": silent.addr, "token": "t", "timeout": 0.3}
        }
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            get_store().get("a/b", 1)
        assert time.monotonic() - started < 3
    finally:
        silent.close()


def test_a_revoked_token_fails_closed(bao, settings):
    client = bao.client()
    token = client.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    settings.SECRET_STORES = {"default": bao.store_config(token=token)}
    with pytest.raises(StoreUnavailable):
        get_store().put(f"{rand()}/{rand()}", "sk-x", expected_version=0)


def test_approle_login_works_and_is_renewed(bao, settings):
    client = bao.client()
    if "approle/" not in client.sys.list_auth_methods():
        client.sys.enable_auth_method("approle")
    policy = f'path "{bao.kv_mount}/*" {{ capabilities = ["create", "read", "update", "list", "delete"] }}'
    client.sys.create_or_update_policy("keyward-test", policy)
    client.auth.approle.create_or_update_approle(
        "keyward-test", token_policies=["keyward-test"], token_ttl="1h"
    )
    role_id = client.auth.approle.read_role_id("keyward-test")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("keyward-test")["data"]["secret_id"]
    settings.SECRET_STORES = {
        "default": bao.store_config(auth="approle", token="", role_id=role_id, secret_id=secret_id)
    }
    store = get_store()
    assert isinstance(store, VaultStore)
    path = f"{rand()}/{rand()}"
    assert store.put(path, "sk-approle", expected_version=0) == 1
    store._renew_at = 0  # the renewal point has passed
    assert store.get(path, 1) == "sk-approle"
    assert store._renew_at > 0


def test_kubernetes_login_works_and_a_removed_service_account_fails_closed(bao, settings, tmp_path):
    from tests.kube_stub import KubeStub, ca_certificate_pem, service_account_jwt

    client, kube = bao.client(), KubeStub()
    try:
        if "kubernetes/" not in client.sys.list_auth_methods():
            client.sys.enable_auth_method("kubernetes")
        client.write_data(
            "auth/kubernetes/config",
            data={
                "kubernetes_host": kube.url,
                "disable_local_ca_jwt": True,
                "kubernetes_ca_cert": ca_certificate_pem(),
            },
        )
        policy = (
            f'path "{bao.kv_mount}/*" {{ capabilities = ["create", "read", "update", "list"] }}'
        )
        client.sys.create_or_update_policy("keyward-k8s", policy)
        client.write_data(
            "auth/kubernetes/role/keyward",
            data={
                "bound_service_account_names": ["keyward"],
                "bound_service_account_namespaces": ["keyward"],
                "token_policies": ["keyward-k8s"],
                "token_ttl": "1h",
            },
        )
        jwt = service_account_jwt("keyward", "keyward")
        kube.valid[jwt] = ("keyward", "keyward")
        jwt_file = tmp_path / "token"
        jwt_file.write_text(jwt)
        config = bao.store_config(
            auth="kubernetes", token="", k8s_role="keyward", k8s_jwt_path=str(jwt_file)
        )
        settings.SECRET_STORES = {"default": config}
        path = f"{rand()}/{rand()}"
        assert get_store().put(path, "sk-k8s", expected_version=0) == 1
        assert get_store().get(path, 1) == "sk-k8s"
        assert kube.reviews >= 1
        kube.valid.clear()  # the service account is gone: a new login is refused
        settings.SECRET_STORES = {"default": {**config, "timeout": 2.0}}
        with pytest.raises(StoreUnavailable):
            get_store().get(path, 1)
    finally:
        kube.close()


def test_reads_share_one_kept_alive_connection(bao, settings):
    settings.SECRET_STORES = {"default": bao.store_config()}
    store = get_store()
    path = f"{rand()}/{rand()}"
    store.put(path, "sk-pooled", expected_version=0)
    for _ in range(20):
        assert store.get(path, 1) == "sk-pooled"
    assert isinstance(store, VaultStore) and store._pool.num_connections == 1


def test_a_read_the_policy_denies_fails_closed(bao, settings):
    path = f"{rand()}/{rand()}"
    settings.SECRET_STORES = {"default": bao.store_config()}
    get_store().put(path, "sk-denied", expected_version=0)
    token = bao.client().auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    settings.SECRET_STORES = {"default": bao.store_config(token=token)}
    with pytest.raises(StoreUnavailable) as refused:
        get_store().get(path, 1)
    assert "sk-denied" not in str(refused.value)
