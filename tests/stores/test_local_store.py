"""The local store's envelope encryption: bound to its row, re-wrappable, conflict-safe."""

from __future__ import annotations

import base64
import threading

import pytest
from django.db import connection
from django.test import override_settings

from stores.exceptions import SecretMissing, StoreConflict
from stores.local import rewrap_all
from stores.models import LocalSecret
from stores.registry import get_store
from tests.factories import rand

pytestmark = pytest.mark.usefixtures("local_default")


@pytest.fixture
def local_default(settings):
    settings.SECRET_STORES = {"default": {"backend": "local"}}


@pytest.mark.django_db
def test_the_database_holds_only_ciphertext():
    path = f"{rand()}/{rand()}"
    get_store().put(path, "sk-proj-plaintextcanary", expected_version=0)
    row = LocalSecret.objects.get(path=path)
    dump = bytes(row.ciphertext or b"") + bytes(row.wrapped_key)
    assert b"plaintextcanary" not in dump
    assert base64.b64encode(b"plaintextcanary") not in dump


@pytest.mark.django_db
def test_a_ciphertext_copied_onto_another_keys_row_does_not_decrypt():
    store = get_store()
    mine, theirs = f"t1/{rand()}", f"t2/{rand()}"
    store.put(mine, "sk-mine", expected_version=0)
    store.put(theirs, "sk-theirs", expected_version=0)
    source = LocalSecret.objects.get(path=theirs)
    LocalSecret.objects.filter(path=mine).update(
        ciphertext=source.ciphertext,
        nonce=source.nonce,
        wrapped_key=source.wrapped_key,
        key_nonce=source.key_nonce,
        master_key_id=source.master_key_id,
    )
    with pytest.raises(SecretMissing):
        store.get(mine, 1)
    assert store.get(theirs, 1) == "sk-theirs"


@pytest.mark.django_db
def test_a_ciphertext_moved_to_another_version_does_not_decrypt():
    store, path = get_store(), f"t/{rand()}"
    store.put(path, "sk-one", expected_version=0)
    store.put(path, "sk-two", expected_version=1)
    one = LocalSecret.objects.get(path=path, version=1)
    LocalSecret.objects.filter(path=path, version=2).update(
        ciphertext=one.ciphertext,
        nonce=one.nonce,
        wrapped_key=one.wrapped_key,
        key_nonce=one.key_nonce,
    )
    with pytest.raises(SecretMissing):
        store.get(path, 2)


@pytest.mark.django_db
def test_master_key_rotation_rewraps_every_key_and_old_data_still_decrypts(settings):
    store, paths = get_store(), [f"t/{rand()}" for _ in range(5)]
    for n, path in enumerate(paths):
        store.put(path, f"sk-{n}", expected_version=0)
    store.destroy(paths[0], [1])
    old_ring = dict(settings.MASTER_KEYS)
    new_id = max(old_ring) + 1
    new_ring = {**old_ring, new_id: b"\x07" * 32}
    with override_settings(MASTER_KEYS=new_ring):
        new_store = get_store()
        assert [new_store.get(p, 1) for p in paths[1:]] == ["sk-1", "sk-2", "sk-3", "sk-4"]
        assert rewrap_all(batch=2) == 4
        assert rewrap_all() == 0, "re-wrapping twice changes nothing"
        assert set(
            LocalSecret.objects.filter(destroyed_at=None).values_list("master_key_id", flat=True)
        ) == {new_id}
    with override_settings(MASTER_KEYS={new_id: new_ring[new_id]}):
        only_new = get_store()
        assert [only_new.get(p, 1) for p in paths[1:]] == ["sk-1", "sk-2", "sk-3", "sk-4"]


@pytest.mark.django_db
def test_without_its_master_key_a_secret_fails_closed(settings):
    from stores.exceptions import StoreUnavailable

    path = f"t/{rand()}"
    get_store().put(path, "sk-x", expected_version=0)
    with override_settings(MASTER_KEYS={99: b"\x01" * 32}), pytest.raises(StoreUnavailable):
        get_store().get(path, 1)


def test_concurrent_writers_with_the_same_expectation_produce_one_version(committed_db):
    store, path = get_store(), f"t/{rand()}"
    store.put(path, "sk-0", expected_version=0)
    outcomes: list[str] = []

    def write(n: int) -> None:
        try:
            store.put(path, f"sk-{n}", expected_version=1)
            outcomes.append("ok")
        except StoreConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 1
    assert [v.version for v in store.versions(path)] == [1, 2]


@pytest.mark.django_db
def test_the_rewrap_command_reports_and_audits(settings):
    import io

    from django.core.management import call_command

    from audit.models import AuditEvent

    path = f"t/{rand()}"
    get_store().put(path, "sk-cmd", expected_version=0)
    new_ring = {**settings.MASTER_KEYS, max(settings.MASTER_KEYS) + 1: b"\x09" * 32}
    with override_settings(MASTER_KEYS=new_ring):
        out = io.StringIO()
        call_command("rewrap_master_key", stdout=out)
        assert "re-wrapped 1 data keys" in out.getvalue()
        assert get_store().get(path, 1) == "sk-cmd"
    event = AuditEvent.objects.get(action="store.master_key_rewrapped")
    assert event.details["rewrapped"] == 1


@pytest.mark.django_db
def test_the_rewrap_job_runs_as_a_task(settings):
    from stores import tasks

    path = f"t/{rand()}"
    get_store().put(path, "sk-task", expected_version=0)
    newest = max(settings.MASTER_KEYS) + 1
    with override_settings(MASTER_KEYS={**settings.MASTER_KEYS, newest: b"\x0b" * 32}):
        tasks.rewrap_local_store.apply()
        assert LocalSecret.objects.get(path=path).master_key_id == newest
        assert get_store().get(path, 1) == "sk-task"
