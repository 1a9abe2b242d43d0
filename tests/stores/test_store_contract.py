"""One contract for every secret-store backend, run against the local store and a real
OpenBao (or the external Vault named by KEYWARD_TEST_VAULT_ADDR/TOKEN)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from stores.base import VersionInfo
from stores.exceptions import SecretMissing, StoreConflict
from tests.factories import rand

pytestmark = pytest.mark.django_db(transaction=False)


def _path() -> str:
    return f"{rand('tenant')}/{rand('key')}"


def test_put_and_get_versions(default_store):
    path = _path()
    assert default_store.put(path, "sk-first", expected_version=0) == 1
    assert default_store.put(path, "sk-second", expected_version=1) == 2
    assert default_store.get(path, 1) == "sk-first"
    assert default_store.get(path, 2) == "sk-second"
    assert default_store.versions(path) == [VersionInfo(1, False), VersionInfo(2, False)]


def test_check_and_set_refuses_a_stale_writer(default_store):
    path = _path()
    default_store.put(path, "sk-first", expected_version=0)
    with pytest.raises(StoreConflict):
        default_store.put(path, "sk-stale", expected_version=0)
    with pytest.raises(StoreConflict):
        default_store.put(path, "sk-stale", expected_version=5)
    assert default_store.versions(path) == [VersionInfo(1, False)]


def test_destroy_is_irrecoverable_and_idempotent(default_store):
    path = _path()
    default_store.put(path, "sk-first", expected_version=0)
    default_store.put(path, "sk-second", expected_version=1)
    default_store.destroy(path, [1])
    default_store.destroy(path, [1])
    with pytest.raises(SecretMissing):
        default_store.get(path, 1)
    assert default_store.get(path, 2) == "sk-second"
    assert default_store.versions(path) == [VersionInfo(1, True), VersionInfo(2, False)]


def test_missing_paths_and_versions(default_store):
    with pytest.raises(SecretMissing):
        default_store.get(_path(), 1)
    assert default_store.versions(_path()) == []
    path = _path()
    default_store.put(path, "sk-only", expected_version=0)
    with pytest.raises(SecretMissing):
        default_store.get(path, 2)


def test_unicode_and_long_secrets_round_trip(default_store):
    path = _path()
    secret = "sk-" + "x" * 1000
    default_store.put(path, secret, expected_version=0)
    assert default_store.get(path, 1) == secret


def test_health(default_store):
    assert default_store.health() is True


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_concurrent_writers_with_the_same_expectation_produce_one_version(default_store):
    """(The local store's version of this needs committed rows: see test_local_store.)"""
    path = _path()
    default_store.put(path, "sk-0", expected_version=0)
    outcomes: list[str] = []

    def write(n: int) -> None:
        try:
            default_store.put(path, f"sk-{n}", expected_version=1)
            outcomes.append("ok")
        except StoreConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 1
    assert [v.version for v in default_store.versions(path)] == [1, 2]


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_the_asyncio_read_answers_as_the_synchronous_one(default_store):
    path = _path()
    default_store.put(path, "sk-first", expected_version=0)
    default_store.put(path, "sk-second", expected_version=1)

    async def reads() -> list[str]:
        return [await default_store.aget(path, 1), await default_store.aget(path, 2)]

    assert asyncio.run(reads()) == ["sk-first", "sk-second"]
    with pytest.raises(SecretMissing):
        asyncio.run(default_store.aget(path, 3))
    with pytest.raises(SecretMissing):
        asyncio.run(default_store.aget(_path(), 1))
