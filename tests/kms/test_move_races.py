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

from kms.actions import keys, moves
from kms.models import KeyVersion, ProviderKey, TenantMove
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
def row_held(version_pk: int) -> Iterator[threading.Event]:
    """Another connection holds the version's row lock until the event is set."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            KeyVersion.objects.select_for_update().get(pk=version_pk)
            taken.set()
            release.wait(30)

    holder = Job(hold)
    holder.start()
    taken.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join(30)


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
        retire = Job(lambda: keys.do_retire_version(previous.pk, actor=SYSTEM, now=later))
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
