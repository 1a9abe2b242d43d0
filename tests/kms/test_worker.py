"""Jobs on a real Celery worker process over the real Redis broker and a real OpenBao."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from django.db import connection
from psycopg import sql

from audit.models import AuditEvent
from core.context import Origin, bound_origin
from kms import tasks
from kms.actions import keys
from kms.models import KeyVersion, ProviderKey, ValidationResult
from tests import pg
from tests import provider_stub as docs
from tests.celery_worker import Worker, redis_dump, wait_for
from tests.factories import make_tenant
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM

APP = pg.APP_ROLE
pytestmark = [pytest.mark.slow, pytest.mark.postgresql]  # a worker process shares the database


@pytest.fixture
def worker(committed_db, provider_stub, store_config, default_store, tmp_path):
    running = Worker(store_config, provider_stub.url, tmp_path / "worker.log")
    yield running
    running.stop()


def _key():
    return keys.do_onboard_key(
        make_tenant(), keys.KeyInput("openai", "prod", openai_key()), validate=False, actor=SYSTEM
    )


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_a_key_the_provider_now_rejects_becomes_invalid(worker, provider_stub):
    key = _key()
    provider_stub.answer(401, docs.OPENAI_INVALID)
    worker.send(tasks.check_key, str(key.id))
    wait_for(
        lambda: ProviderKey.objects.get(pk=key.pk).status == "invalid",
        what="the key to turn invalid",
    )
    assert provider_stub.seen[-1].headers["authorization"].startswith("Bearer sk-proj-")
    assert AuditEvent.objects.filter(action="key.validated", target=f"key:{key.id}").exists()


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_a_task_carries_the_id_of_the_request_that_enqueued_it(
    committed_db, provider_stub, store_config, default_store, tmp_path
):
    log = tmp_path / "worker.log"
    worker = Worker(store_config, provider_stub.url, log, extra_env={"KEYWARD_LOG_FORMAT": "json"})
    try:
        key = _key()
        request_id = "req-" + uuid.uuid4().hex
        with bound_origin(Origin(request_id=request_id)):
            worker.send(tasks.check_key, str(key.id))
        wait_for(
            lambda: AuditEvent.objects.filter(action="key.validated").exists(),
            what="the check",
        )
        assert AuditEvent.objects.get(action="key.validated").request_id == request_id
        wait_for(lambda: "succeeded" in log.read_text(), what="the task's last line")
    finally:
        worker.stop()
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    carried = [line for line in lines if line["request_id"] == request_id]
    assert any("succeeded" in line["message"] for line in carried), lines
    assert all(line["request_id"] != request_id for line in lines if "ready" in line["message"])


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_a_rate_limit_is_retried_no_sooner_than_retry_after_and_never_invalidates(
    worker, provider_stub
):
    key = _key()
    provider_stub.answer(429, docs.OPENAI_RATE, headers={"retry-after": "2"})
    worker.send(tasks.check_key, str(key.id))
    wait_for(
        lambda: ValidationResult.objects.filter(key=key).count() >= 2, timeout=40, what="a retry"
    )
    first, second = provider_stub.seen[0], provider_stub.seen[1]
    assert second.at - first.at >= 2.0
    assert ProviderKey.objects.get(pk=key.pk).status == "active"


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_retirement_runs_on_the_worker_and_destroys_in_vault(worker, bao, store_config):
    key = _key()
    keys.do_rotate_key(
        key, secret=openai_key(), grace_period_seconds=0, validate=False, actor=SYSTEM
    )
    time.sleep(0.01)
    worker.send(tasks.retire_versions)
    wait_for(
        lambda: KeyVersion.objects.filter(key=key, stage="destroyed").count() == 1,
        what="the retirement",
    )
    metadata = bao.client().secrets.kv.v2.read_secret_metadata(
        path=f"{store_config['path_prefix']}/{key.store_path}", mount_point=bao.kv_mount
    )
    assert {v: d["destroyed"] for v, d in metadata["data"]["versions"].items()} == {
        "1": True,
        "2": False,
    }
    assert KeyVersion.objects.filter(key=key, stage="current").count() == 1


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_no_key_or_token_reaches_redis_through_jobs(worker, provider_stub, settings):
    from tests.kms.test_canary import assert_absent, canary

    secret = canary()
    key = keys.do_onboard_key(
        make_tenant(), keys.KeyInput("openai", "prod", secret), validate=False, actor=SYSTEM
    )
    provider_stub.answer(429, docs.OPENAI_RATE, headers={"retry-after": "1"})
    worker.send(tasks.check_key, str(key.id))
    wait_for(lambda: ValidationResult.objects.filter(key=key).count() >= 1, what="a check")
    in_flight = redis_dump(settings.CELERY_BROKER_URL)  # the retry is waiting in the broker now
    provider_stub.answer(401, docs.OPENAI_INVALID)
    wait_for(
        lambda: ProviderKey.objects.get(pk=key.pk).status == "invalid", timeout=40, what="the retry"
    )
    assert any(secret in s.headers.get("authorization", "") for s in provider_stub.seen)
    assert_absent(secret, in_flight + redis_dump(settings.CELERY_BROKER_URL), "Redis")


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_an_invalid_key_sends_a_signed_webhook(
    committed_db, provider_stub, store_config, default_store, tmp_path, settings
):
    import hashlib
    import hmac
    import json

    from notify.models import WebhookDelivery
    from tests.provider_stub import ProviderStub

    receiver = ProviderStub()
    settings.WEBHOOKS = [{"url": receiver.url + "/hooks/keyward", "secret": "whsec-" + "s" * 24}]
    worker = Worker(
        store_config,
        provider_stub.url,
        tmp_path / "worker.log",
        webhooks=json.dumps(settings.WEBHOOKS),
    )
    try:
        key = _key()
        provider_stub.answer(401, docs.OPENAI_INVALID)
        worker.send(tasks.check_key, str(key.id))
        wait_for(
            lambda: WebhookDelivery.objects.filter(status="delivered").exists(), what="the webhook"
        )
        # the worker enqueued the delivery on its own default queue: nothing reaches it from here
    finally:
        worker.stop()
        receiver.close()
    seen = receiver.seen[-1]
    assert seen.path == "/hooks/keyward" and seen.headers["x-keyward-event"] == "key.invalid"
    stamp, mac = (part.split("=", 1)[1] for part in seen.headers["x-keyward-signature"].split(","))
    expected = hmac.new(
        b"whsec-" + b"s" * 24, stamp.encode() + b"." + seen.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(mac, expected)
    body = json.loads(seen.body)
    assert (body["event"], body["key_id"]) == ("key.invalid", str(key.id))
    assert "sk-proj-" not in seen.body.decode()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.attempts, delivery.last_status_code) == (1, 200)


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_a_worker_killed_mid_retirement_leaves_exactly_one_retirement(
    committed_db, provider_stub, store_config, default_store, bao, tmp_path
):
    from audit.verify import verify_all
    from tests import pg

    key = _key()
    keys.do_rotate_key(
        key, secret=openai_key(), grace_period_seconds=0, validate=False, actor=SYSTEM
    )
    previous = KeyVersion.objects.get(key=key, stage="previous")
    first = Worker(store_config, provider_stub.url, tmp_path / "first.log", visibility_timeout=2)
    with pg.connect(pg.APP_ROLE) as holder:  # hold the row: the task blocks at its compare-and-set
        holder.execute("SELECT id FROM kms_keyversion WHERE id = %s FOR UPDATE", [previous.pk])
        first.send(tasks.retire_version, previous.pk)
        wait_for(
            lambda: "keyward.kms.retire_version" in first.log.read_text(), what="the task to start"
        )
        time.sleep(0.5)
        first.kill()
        holder.rollback()
    assert KeyVersion.objects.get(pk=previous.pk).stage == "previous", "nothing happened yet"
    time.sleep(2.5)  # past the visibility timeout: the broker hands the task out again
    second = Worker(
        store_config,
        provider_stub.url,
        tmp_path / "second.log",
        queue=first.queue,
        visibility_timeout=2,
    )
    try:
        wait_for(
            lambda: KeyVersion.objects.get(pk=previous.pk).stage == "destroyed",
            timeout=40,
            what="the redelivered retirement",
        )
    finally:
        second.stop()
    assert (
        AuditEvent.objects.filter(action="key.version_retired", target=f"key:{key.id}").count() == 1
    )
    assert KeyVersion.objects.filter(key=key, stage="current").count() == 1
    metadata = bao.client().secrets.kv.v2.read_secret_metadata(
        path=f"{store_config['path_prefix']}/{key.store_path}", mount_point=bao.kv_mount
    )
    assert {v: d["destroyed"] for v, d in metadata["data"]["versions"].items()} == {
        "1": True,
        "2": False,
    }
    assert all(result.ok for result in verify_all())


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_the_scheduled_sweep_checks_every_active_key_on_the_worker(worker, provider_stub, settings):
    first, second = _key(), _key()
    provider_stub.answer(200)
    worker.send(tasks.schedule_key_checks)  # interval from the worker's settings: spread, then run
    wait_for(
        lambda: (
            ValidationResult.objects.filter(key__in=[first, second], trigger="job").count() == 2
        ),
        timeout=60,
        what="both scheduled checks",
    )


@pytest.fixture
def own_role() -> Any:
    """A login role of this test's own, a member of the application role (so it has its
    privileges), whose connections the test can cut off without touching anyone else's."""
    name = f"keyward_jobs_{uuid.uuid4().hex[:10]}"
    with pg.connect(autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN INHERIT IN ROLE {}").format(
                sql.Identifier(name), sql.Identifier(APP)
            )
        )
    try:
        yield name
    finally:
        with pg.connect(autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [name],
            )
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.mark.parametrize("store_config", ["vault"], indirect=True)
def test_a_check_that_loses_its_database_is_retried_until_the_database_answers(
    committed_db, provider_stub, store_config, default_store, tmp_path, own_role
):
    """A real OperationalError on the worker: its connection is terminated and its role
    may open no other, so the task fails on the database, and is retried with backoff
    until it can connect again; then it runs once, to the end."""
    db = connection.settings_dict
    url = f"postgres://{own_role}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    worker = Worker(
        store_config,
        provider_stub.url,
        tmp_path / "worker.log",
        extra_env={"KEYWARD_DATABASE_URL": url},
    )
    try:
        _loses_its_database(worker, provider_stub, own_role)
    finally:
        worker.stop()


def _loses_its_database(worker: Worker, provider_stub: Any, role: str) -> None:
    key = _key()
    provider_stub.answer(401, docs.OPENAI_INVALID)
    limit = sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}")
    with pg.connect(autocommit=True) as admin:
        admin.execute(limit.format(sql.Identifier(role), sql.Literal(0)))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [role],
            )
            worker.send(tasks.check_key, str(key.id))
            wait_for(
                lambda: worker.log.read_text().count("Retry in") >= 2,
                timeout=30,
                what="the task to be retried on the database error",
            )
            assert "OperationalError" in worker.log.read_text()
            assert not ValidationResult.objects.filter(key=key).exists()
        finally:
            admin.execute(limit.format(sql.Identifier(role), sql.Literal(-1)))
    wait_for(
        lambda: ProviderKey.objects.get(pk=key.pk).status == "invalid",
        timeout=40,
        what="the retried check to finish",
    )
    assert ValidationResult.objects.filter(key=key).count() == 1, "it ran to the end once"
    assert len(provider_stub.seen) == 1
