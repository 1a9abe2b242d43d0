"""Moves between two OpenBao servers on real Celery workers over Redis: a worker SIGKILLed
as the copy begins or in the middle of the switch, its task delivered again to another worker,
and the move completed exactly once, with every exchange answered meanwhile and nothing
left in the old store."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from audit.models import AuditEvent
from kms import tasks
from kms.actions import keys, moves
from kms.models import BEFORE_SWITCH, ProviderKey, TenantMove
from tenants.models import Tenant
from tests import pg
from tests.celery_worker import Worker, redis_dump, wait_for
from tests.factories import make_tenant
from tests.kms.test_canary import assert_absent, canary
from tests.kms.test_move_races import _waiting_locks
from tests.kms.test_moves import Regions
from tests.kms.test_rotation_worker import _exchanger
from tests.kms.world import SYSTEM

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]  # a worker process shares the database


@pytest.fixture
def regions(bao: Any, bao_second: Any, settings: Any) -> Regions:
    prefix = "keyward-test-" + os.urandom(4).hex()
    settings.SECRET_STORES = {
        "default": bao.store_config(path_prefix=prefix, region="eu"),
        "us": bao_second.store_config(path_prefix=prefix, region="us"),
    }
    return Regions({"default": bao, "us": bao_second}, prefix)


def _worker_env(settings: Any) -> dict[str, str]:
    """The worker's second store and the default store's region, as a deployment sets them."""
    return {
        "KEYWARD_SECRET_STORES": json.dumps({"us": settings.SECRET_STORES["us"]}),
        "KEYWARD_SECRET_STORE_REGION": "eu",
    }


def _start() -> tuple[Tenant, ProviderKey, dict[int, str], TenantMove]:
    tenant = make_tenant()
    secrets = {1: canary()}
    key = keys.do_onboard_key(
        tenant, keys.KeyInput("openai", "prod", secrets[1]), validate=False, actor=SYSTEM
    )
    secrets[2] = canary()
    key = keys.do_rotate_key(
        key, secret=secrets[2], grace_period_seconds=600, validate=False, actor=SYSTEM
    )
    move = moves.do_start_move(tenant, "us", actor=SYSTEM)
    return tenant, key, secrets, move


def _kill_mid_step(
    settings: Any,
    stub_url: str,
    tmp_path: Any,
    move: TenantMove,
    lock: str,
    started: Callable[[], bool],
    exchange: Callable[[], str],
) -> set[str]:
    """Hold `lock` (a row the step waits for) so the first worker stops inside the step,
    SIGKILL it, then let a second worker take the redelivered task to the end; what every
    exchange released meanwhile."""
    store, env = settings.SECRET_STORES["default"], _worker_env(settings)
    released = {exchange()}
    first = Worker(store, stub_url, tmp_path / "first.log", visibility_timeout=2, extra_env=env)
    with pg.connect(pg.APP_ROLE) as holder:
        holder.execute(lock)
        first.send(tasks.advance_move, str(move.pk))
        wait_for(started, timeout=30, what="the step to begin")
        time.sleep(0.5)
        released.add(exchange())
        first.kill()
        holder.rollback()
    held = TenantMove.objects.get(pk=move.pk).state
    assert held in BEFORE_SWITCH, "the step was stopped before it could finish"
    time.sleep(2.5)  # past the visibility timeout: the broker hands the task out again
    second = Worker(
        store,
        stub_url,
        tmp_path / "second.log",
        queue=first.queue,
        visibility_timeout=2,
        extra_env=env,
    )
    try:
        deadline = time.monotonic() + 40
        while TenantMove.objects.get(pk=move.pk).state != "completed":
            assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()[-2000:]
            released.add(exchange())
            time.sleep(0.2)
    finally:
        second.stop()
    released.add(exchange())
    return released


def _moved_once(regions: Regions, tenant: Tenant, key: ProviderKey, secrets: dict[int, str]):
    assert AuditEvent.objects.filter(action="tenant.store_moved", tenant=tenant.slug).count() == 1
    assert Tenant.objects.get(pk=tenant.pk).store == "us"
    key.refresh_from_db()
    assert key.store == "us"
    assert regions.held("us", tenant) == {key.store_path: secrets}
    assert regions.held("default", tenant) == {}


def test_a_worker_killed_as_the_copy_begins_moves_the_tenant_once_after_redelivery(
    committed_db, provider_stub, regions, tmp_path, settings
):
    tenant, key, secrets, move = _start()
    released = _kill_mid_step(
        settings,
        provider_stub.url,
        tmp_path,
        move,
        # the copy waits for the move's row to take its lease: killed holding nothing
        f"SELECT id FROM kms_tenantmove WHERE id = '{move.pk}' FOR UPDATE",
        lambda: _waiting_locks() >= 1,
        _exchanger(key),
    )
    _moved_once(regions, tenant, key, secrets)
    assert released == {secrets[2]}
    logs = "".join(path.read_text() for path in tmp_path.glob("*.log"))
    for secret in secrets.values():  # neither version in a Celery message or a log
        assert_absent(secret, redis_dump(settings.CELERY_BROKER_URL), "Redis")
        assert_absent(secret, logs, "the workers' logs")


def test_a_worker_killed_mid_switch_moves_the_tenant_once_after_redelivery(
    committed_db, provider_stub, regions, tmp_path, settings
):
    tenant, key, secrets, move = _start()
    released = _kill_mid_step(
        settings,
        provider_stub.url,
        tmp_path,
        move,
        # NO KEY UPDATE: the switch's FOR UPDATE waits, a token's foreign key does not
        f"SELECT id FROM tenants_tenant WHERE id = '{tenant.pk}' FOR NO KEY UPDATE",
        lambda: TenantMove.objects.get(pk=move.pk).state == "switching",
        _exchanger(key),
    )
    _moved_once(regions, tenant, key, secrets)
    assert released == {secrets[2]}
