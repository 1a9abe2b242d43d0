"""With the broker down, the API keeps answering, nothing waits on the broker, and the
notifications it could not hand over are kept in the database and go out once it is back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from notify.models import WebhookDelivery
from settings.celery import app
from tests import provider_stub as docs
from tests.bao import free_port
from tests.celery_worker import Worker, wait_for
from tests.factories import client
from tests.provider_stub import ProviderStub

# A worker process shares the database.
pytestmark = [pytest.mark.slow, pytest.mark.postgresql]


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: _answers(self.port), timeout=10, what="redis")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _answers(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _reset_broker_pools() -> None:
    """Drop the app's connection and producer pools so the next publish uses conf again."""
    pool = getattr(app, "_pool", None)
    if pool is not None:
        pool.force_close_all()
        setattr(app, "_pool", None)  # noqa: B010 - the attribute is private to Celery
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


@pytest.fixture
def private_broker(monkeypatch):
    broker = PrivateRedis()
    monkeypatch.setattr(app.conf, "broker_url", broker.url)
    _reset_broker_pools()
    yield broker
    broker.stop()
    monkeypatch.undo()
    _reset_broker_pools()


def test_a_broker_outage_loses_no_notification(
    committed_world, private_broker, provider_stub, settings, tmp_path
):
    world, receiver = committed_world, ProviderStub()
    settings.WEBHOOKS = [{"url": receiver.url + "/hooks", "secret": "k" * 24}]
    settings.CELERY_BROKER_URL = private_broker.url
    worker = Worker(
        {"backend": "local"},
        provider_stub.url,
        tmp_path / "worker.log",
        webhooks=json.dumps(settings.WEBHOOKS),
        broker=private_broker.url,
        extra_env={"KEYWARD_WEBHOOK_SWEEP_AFTER_SECONDS": "0"},
    )
    try:
        private_broker.stop()
        alice = world.actors.as_("alice")
        assert client().get("/healthz").status_code == 200
        assert alice.get("/api/v1/tenants").status_code == 200
        assert client(world.token()).post("/api/v1/exchange").status_code == 200
        ready = client().get("/readyz")
        assert ready.status_code == 503 and ready.json()["down"] == ["broker"]
        provider_stub.answer(401, docs.OPENAI_INVALID)
        started = time.monotonic()
        url = f"/api/v1/tenants/{world.actors.tenant_a.slug}/keys/{world.key_a.id}/validate"
        validated = alice.post(url)
        assert validated.status_code == 200, validated.content
        assert validated.json()["key_status"] == "invalid"
        assert time.monotonic() - started < 15, "a request does not hang on the broker"
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == "pending" and receiver.seen == []
        private_broker.start()
        wait_for(
            lambda: "ready." in worker.log.read_text() or "Connected" in worker.log.read_text(),
            timeout=30,
        )
        worker.send(__import__("notify.tasks", fromlist=["x"]).deliver_pending_webhooks)
        wait_for(
            lambda: WebhookDelivery.objects.get().status == "delivered",
            timeout=60,
            what="the delivery",
        )
    finally:
        worker.stop()
        receiver.close()
    assert receiver.seen[-1].headers["x-keyward-event"] == "key.invalid"
