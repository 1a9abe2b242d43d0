"""Moves racing the jobs beside them, on PostgreSQL (whose row locks order them): each
job in its own thread and connection, held at a chosen point by a lock another connection
takes, so the interleaving the race needs happens every time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from kms import jobs
from kms.actions import keys, moves, retirement
from kms.models import KeyVersion, ProviderKey, TenantMove
from stores.models import LocalSecret
from tests.factories import make_tenant
from tests.kms import test_moves
from tests.kms.helpers import openai_key
from tests.kms.test_moves import Regions
from tests.kms.world import SYSTEM, onboard_key

pytestmark = pytest.mark.postgresql
regions = test_moves.regions  # two local stores, and two OpenBao servers


def _waiting_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database()"
        )
        return int(cursor.fetchone()[0])


def _until(done: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Job(threading.Thread):
    """A call in a thread of its own, with its own database connection."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.call()
        except BaseException as error:  # handed to the test
            self.error = error
        finally:
            connection.close()


@contextmanager
def held_by_another(take: Callable[[], object]) -> Iterator[threading.Event]:
    """Another connection runs `take` in a transaction and keeps it open (its locks held)
    until the event is set, then rolls it back."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            take()
            taken.set()
            release.wait(30)
            transaction.set_rollback(True)

    holder = Job(hold)
    holder.start()
    taken.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join(30)


def row_held(version_pk: int) -> Any:
    """Another connection holds the version's row lock until the event is set."""
    return held_by_another(lambda: KeyVersion.objects.select_for_update().get(pk=version_pk))


def test_a_version_retired_while_the_move_switches_is_not_left_readable_in_the_target(
    committed_db, regions: Regions
):
    tenant = make_tenant()
    secrets = {1: openai_key(), 2: openai_key()}
    key = onboard_key(tenant, secrets[1])
    keys.do_rotate_key(
        key, secret=secrets[2], grace_period_seconds=600, validate=False, actor=SYSTEM
    )
    move = moves.do_start_move(tenant, "us", actor=SYSTEM)
    moves.do_run_move_step(move.id, actor=SYSTEM)  # copied
    moves.do_run_move_step(move.id, actor=SYSTEM)  # verified: v1 and v2
    previous = KeyVersion.objects.get(key=key, version=1)
    later = timezone.now() + timedelta(hours=1)

    with row_held(previous.pk) as release:
        # The retirement reads the key where it is now, destroys v1 there, and waits for
        # the version's row; the switch and the destroy step run meanwhile.
        retire = Job(lambda: retirement.do_retire_version(previous.pk, actor=SYSTEM, now=later))
        retire.start()
        _until(lambda: _waiting_locks() >= 1)
        finish = Job(lambda: _finish(move.id))
        finish.start()
        _until(lambda: not finish.is_alive() or _waiting_locks() >= 2)
        release.set()
        retire.join(30)
        finish.join(30)
    assert retire.error is None and finish.error is None, (retire.error, finish.error)

    assert TenantMove.objects.get(pk=move.id).state == "completed"
    assert KeyVersion.objects.get(pk=previous.pk).stage == "destroyed"
    moved = ProviderKey.objects.get(pk=key.pk)
    assert moved.store == "us"
    held = regions.held("us", tenant)[moved.store_path]
    assert held == {1: None, 2: secrets[2]}, "the retired version is gone from the target too"


def _finish(move_id: Any) -> None:
    while moves.do_run_move_step(move_id, actor=SYSTEM).state in ("switching", "destroying"):
        pass


def numbers_held(paths: list[str]) -> Any:
    """Another connection has written version 1 of each path and not yet committed, so a
    write of that number waits for it; rolled back when the event is set."""

    def write() -> None:
        for path in paths:
            LocalSecret.objects.create(
                path=path, version=1, master_key_id=1, wrapped_key=b"", key_nonce=b"", nonce=b""
            )

    return held_by_another(write)


def test_a_copy_that_outlives_its_failed_move_leaves_nothing_in_the_target(
    committed_db, settings: Any
):
    settings.SECRET_STORES = {
        "default": {"backend": "local", "region": "eu"},
        "us": {"backend": "local", "region": "us"},
    }
    tenant = make_tenant()
    for label in ("first", "second"):
        onboard_key(tenant, openai_key(), label=label)
    move = moves.do_start_move(tenant, "us", actor=SYSTEM)
    # Its message waited in the broker: the move was last touched minutes ago.
    TenantMove.objects.filter(pk=move.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    paths = [moves.target_path(move, k.id) for k in ProviderKey.objects.filter(tenant=tenant)]

    with numbers_held(paths) as release:
        copy = Job(lambda: moves.do_run_move_step(move.id, actor=SYSTEM))
        copy.start()
        _until(lambda: _waiting_locks() >= 1)  # the copy waits to write its first version
        stalled = jobs.stalled_moves()
        # Another worker fails the move and empties the target meanwhile.
        moves.fail_move(move, "copy", "The target store is being retired.", SYSTEM)
        assert moves.discard_copies(move)
        release.set()
        copy.join(30)
    assert copy.error is None, copy.error

    assert TenantMove.objects.get(pk=move.pk).state == "failed"
    left = list(LocalSecret.objects.filter(path__in=paths).values_list("path", "version"))
    # The copy held the move, so the sweep gave it no second worker; what it wrote after
    # the purge was discarded too.
    assert (stalled, left) == ([], [])
