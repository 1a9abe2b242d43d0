"""Staged rotations on real Celery workers over Redis and a real OpenBao: a worker
SIGKILLed in the middle of a step, its task delivered again to another worker, and the
rotation completed exactly once, with exactly one current version at every instant and
every exchange answered."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from audit.models import AuditEvent
from kms import tasks
from kms.actions import keys, rotations
from kms.models import RUNNING_ROTATION, KeyVersion, ProviderKey, Rotation, Stage
from stores.registry import get_store
from tenants.actions import do_create_grant
from tests import pg
from tests.admin_stubs.openai import ADMIN_KEY, PROJECT, OpenAIAdminStub
from tests.celery_worker import Worker, redis_dump, wait_for
from tests.factories import client, make_principal, make_tenant
from tests.kms.test_canary import assert_absent, canary, pg_dump
from tests.kms.world import SYSTEM
from tests.provider_stub import Reply

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]  # a worker process shares the database


def _exchanger(key: ProviderKey) -> Callable[[], str]:
    """Issue a token for `key` and exchange it: what a service would get at this instant."""
    principal, secret = make_principal()
    do_create_grant(principal, key.tenant, "openai", ["release"], 900, actor=SYSTEM)

    def exchange() -> str:
        issued = client(secret).post(
            "/api/v1/tokens",
            {"tenant": key.tenant.slug, "provider": "openai", "scopes": ["release"]},
            format="json",
        )
        assert issued.status_code == 201, issued.content
        released = client(issued.json()["token"]).post("/api/v1/exchange")
        assert released.status_code == 200, released.content
        return str(released.json()["api_key"])

    return exchange


def _kill_mid_step(
    store_config: dict[str, Any],
    stub_url: str,
    tmp_path: Any,
    rotation: Rotation,
    lock: str,
    started: Callable[[], bool],
    exchange: Callable[[], str],
    extra_env: dict[str, str] | None = None,
) -> set[str]:
    """Hold `lock` (a row the step waits for) so the first worker stops inside the step,
    SIGKILL it, then let a second worker take the redelivered task to the end; what every
    exchange released meanwhile."""
    released = {exchange()}
    first = Worker(
        store_config, stub_url, tmp_path / "first.log", visibility_timeout=2, extra_env=extra_env
    )
    with pg.connect(pg.APP_ROLE) as holder:
        holder.execute(lock)
        first.send(tasks.advance_rotation, str(rotation.pk))
        wait_for(started, timeout=30, what="the step to begin")
        time.sleep(0.5)
        released.add(exchange())
        first.kill()
        holder.rollback()
    held = Rotation.objects.get(pk=rotation.pk).state
    assert held in RUNNING_ROTATION, "the step was stopped before it could finish"
    time.sleep(2.5)  # past the visibility timeout: the broker hands the task out again
    second = Worker(
        store_config,
        stub_url,
        tmp_path / "second.log",
        queue=first.queue,
        visibility_timeout=2,
        extra_env=extra_env,
    )
    try:
        deadline = time.monotonic() + 40
        while Rotation.objects.get(pk=rotation.pk).state != "retiring":
            assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()[-2000:]
            released.add(exchange())
            assert KeyVersion.objects.filter(key=rotation.key, stage=Stage.CURRENT).count() == 1
            time.sleep(0.2)
    finally:
        second.stop()
    released.add(exchange())
    return released


def _start(validate: bool) -> tuple[ProviderKey, Rotation, str, str]:
    old = canary()
    key = keys.do_onboard_key(
        make_tenant(), keys.KeyInput("openai", "prod", old), validate=False, actor=SYSTEM
    )
    new = canary()
    ask = rotations.RotationRequest(secret=new, grace_period_seconds=600, validate=validate)
    rotation, _ = rotations.do_start_rotation(key, ask, actor=SYSTEM)
    return key, rotation, old, new


def _exactly_once(key: ProviderKey, rotation: Rotation) -> None:
    assert AuditEvent.objects.filter(action="key.rotated", target=f"key:{key.pk}").count() == 1
    stages = dict(KeyVersion.objects.filter(key=key).values_list("version", "stage"))
    assert stages[1] == Stage.PREVIOUS and sorted(stages.values()) == ["current", "previous"]
    done = Rotation.objects.get(pk=rotation.pk)
    assert done.previous_version == 1
    assert {s["step"]: s["state"] for s in done.steps}["promote"] == "done"


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_a_worker_killed_while_testing_the_new_secret_rotates_once_after_redelivery(
    committed_db, provider_stub, store_config, default_store, bao, tmp_path, settings
):
    key, rotation, old, new = _start(validate=True)
    exchange = _exchanger(key)
    released = _kill_mid_step(
        store_config,
        provider_stub.url,
        tmp_path,
        rotation,
        f"SELECT id FROM kms_rotation WHERE id = '{rotation.pk}' FOR UPDATE",
        lambda: any(s.headers.get("authorization") == f"Bearer {new}" for s in provider_stub.seen),
        exchange,
    )
    _exactly_once(key, rotation)
    assert released == {old, new}
    assert AuditEvent.objects.filter(action="key.rotation_tested").count() == 1
    logs = "".join(path.read_text() for path in tmp_path.glob("*.log"))
    events = str(list(AuditEvent.objects.values_list("details", flat=True)))
    for secret in (old, new):  # neither version in a Celery message, a log, an event or a row
        assert_absent(secret, redis_dump(settings.CELERY_BROKER_URL), "Redis")
        assert_absent(secret, logs, "the workers' logs")
        assert_absent(secret, events, "audit events")
        assert_absent(secret, pg_dump(), "the database")


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_a_worker_killed_while_promoting_rotates_once_after_redelivery(
    committed_db, provider_stub, store_config, default_store, bao, tmp_path
):
    key, rotation, old, new = _start(validate=False)
    exchange = _exchanger(key)
    released = _kill_mid_step(
        store_config,
        provider_stub.url,
        tmp_path,
        rotation,
        # NO KEY UPDATE: the promotion's FOR UPDATE waits, a token's foreign key does not
        f"SELECT id FROM kms_providerkey WHERE id = '{key.pk}' FOR NO KEY UPDATE",
        lambda: Rotation.objects.get(pk=rotation.pk).state == "promoting",
        exchange,
    )
    _exactly_once(key, rotation)
    assert released == {old, new}


class SlowToAnswer(OpenAIAdminStub):
    """Creates the first service account at once but answers late: a worker killed while
    it waits has had a key created at the provider that it never learnt of."""

    answered = False

    def route(self, seen: Any) -> Reply:
        reply = super().route(seen)
        if seen.method == "POST" and not self.answered:
            self.answered, reply.delay = True, 30.0
        return reply


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_a_worker_killed_after_the_provider_created_the_key_rotates_once_after_redelivery(
    committed_db, provider_stub, store_config, default_store, bao, tmp_path, settings
):
    admin_api = SlowToAnswer()
    settings.PROVIDER_ADMIN_BASE_URLS = {"openai": admin_api.base_url}
    try:
        tenant = make_tenant()
        admin = keys.do_onboard_key(
            tenant,
            keys.KeyInput(
                "openai", "admin", ADMIN_KEY, kind="admin", upstream={"project_id": PROJECT}
            ),
            validate=False,
            actor=SYSTEM,
        )
        old = canary()
        key = keys.do_onboard_key(
            tenant,
            keys.KeyInput("openai", "prod", old, admin_credential=admin),
            validate=False,
            actor=SYSTEM,
        )
        rotation, _ = rotations.do_start_rotation(
            key, rotations.RotationRequest(grace_period_seconds=600), actor=SYSTEM
        )
        name = f"keyward-{rotation.pk}"
        released = _kill_mid_step(
            store_config,
            provider_stub.url,
            tmp_path,
            rotation,
            "SELECT 1",  # the worker is held by the provider's slow answer instead
            lambda: any(a["name"] == name for a in admin_api.project.accounts.values()),
            _exchanger(key),
            {"KEYWARD_PROVIDER_ADMIN_BASE_URLS": json.dumps({"openai": admin_api.base_url})},
        )
        _exactly_once(key, rotation)
        made = [a["id"] for a in admin_api.project.accounts.values() if a["name"] == name]
        assert len(made) == 1, "the first attempt's key was retired at the provider"
        current = KeyVersion.objects.get(key=key, stage=Stage.CURRENT)
        assert current.upstream_id == made[0]
        assert released == {old, get_store(key.store).get(key.store_path, current.version)}
    finally:
        admin_api.close()
