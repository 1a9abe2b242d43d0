"""Readers during rotations always find exactly one current version, and can read it;
concurrent retirements of a version retire it once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from audit.actors import Actor
from audit.models import AuditEvent
from kms import jobs
from kms.actions import keys
from kms.models import KeyVersion, ProviderKey
from stores.registry import get_store
from tests.factories import make_tenant
from tests.kms.helpers import openai_key

ACTOR = Actor.system("tests")


@pytest.mark.slow
@pytest.mark.parametrize("store_config", ["local", "vault"], indirect=True)
def test_reads_during_rotation_always_find_exactly_one_current_version(committed_db, default_store):
    tenant = make_tenant()
    key = keys.do_onboard_key(
        tenant, keys.KeyInput("openai", "prod", openai_key()), validate=False, actor=ACTOR
    )
    stop, problems, reads = threading.Event(), [], [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                current = list(
                    KeyVersion.objects.filter(key_id=key.pk, stage="current").values_list(
                        "version", flat=True
                    )
                )
                if len(current) != 1:
                    problems.append(f"{len(current)} current versions")
                    continue
                row = ProviderKey.objects.get(pk=key.pk)
                if not get_store().get(row.store_path, row.current_version).startswith("sk-proj-"):
                    problems.append("unreadable current version")
                reads[0] += 1
        except Exception as exc:  # reported below
            problems.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(10):
            key = keys.do_rotate_key(
                ProviderKey.objects.get(pk=key.pk),
                secret=openai_key(),
                grace_period_seconds=60,
                validate=False,
                actor=ACTOR,
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert problems == []
    assert reads[0] > 10
    assert KeyVersion.objects.filter(key_id=key.pk, stage="current").count() == 1
    assert KeyVersion.objects.filter(key_id=key.pk, stage="previous").count() == 10


def test_concurrent_retirements_of_one_version_retire_it_once(committed_world):
    world = committed_world
    keys.do_rotate_key(
        world.key_a, secret=openai_key(), grace_period_seconds=0, validate=False, actor=ACTOR
    )
    (version_pk,) = jobs.due_versions()
    outcomes: list[bool] = []

    def retire() -> None:
        try:
            outcomes.append(jobs.retire_version(version_pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=retire) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == [False, False, False, True]
    assert AuditEvent.objects.filter(action="key.version_retired").count() == 1
    assert KeyVersion.objects.get(pk=version_pk).stage == "destroyed"
