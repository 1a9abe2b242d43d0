"""TLS with a private CA bundle, and namespaces, against a real OpenBao over https."""

from __future__ import annotations

import asyncio

import hvac.exceptions
import pytest

from stores.exceptions import StoreUnavailable
from stores.registry import get_store
from tests import bao as servers
from tests.factories import rand


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory):
    server = servers.start_dev_server(tmp_path_factory.mktemp("bao-tls"), tls=True)
    yield server
    server.stop()


def test_the_ca_bundle_setting_verifies_vaults_certificate(tls_bao, settings):
    settings.SECRET_STORES = {"default": tls_bao.store_config(ca_cert=tls_bao.extra["ca_cert"])}
    path = f"{rand()}/{rand()}"
    assert get_store().put(path, "sk-over-tls", expected_version=0) == 1
    assert get_store().get(path, 1) == "sk-over-tls"
    assert asyncio.run(get_store().aget(path, 1)) == "sk-over-tls"


def test_without_the_ca_bundle_an_unknown_certificate_fails_closed(tls_bao, settings):
    settings.SECRET_STORES = {"default": tls_bao.store_config()}
    with pytest.raises(StoreUnavailable):
        get_store().put(f"{rand()}/{rand()}", "sk-x", expected_version=0)
    with pytest.raises(StoreUnavailable):
        asyncio.run(get_store().aget(f"{rand()}/{rand()}", 1))
    assert get_store().health() is False


def test_a_namespace_keeps_secrets_inside_it(tls_bao, settings):
    namespace = rand("ns")
    root = tls_bao.client()
    root.adapter.post(f"/v1/sys/namespaces/{namespace}")
    tls_bao.client(namespace).sys.enable_secrets_engine(
        "kv", path="secret", options={"version": "2"}
    )
    settings.SECRET_STORES = {
        "default": tls_bao.store_config(ca_cert=tls_bao.extra["ca_cert"], namespace=namespace)
    }
    path = f"{rand()}/{rand()}"
    get_store().put(path, "sk-in-namespace", expected_version=0)
    inside = tls_bao.client(namespace).secrets.kv.v2.read_secret_version(
        path=f"keyward/{path}", mount_point="secret", raise_on_deleted_version=True
    )
    assert inside["data"]["data"] == {"api_key": "sk-in-namespace"}
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.kv.v2.read_secret_version(
            path=f"keyward/{path}", mount_point="secret", raise_on_deleted_version=True
        )
