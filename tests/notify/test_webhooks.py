"""Webhook deliveries: signed, retried, recorded per attempt, and never sent while a
transaction or a row lock is held."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from core import egress
from kms import egress as kms_egress
from kms import jobs
from kms.exceptions import ForbiddenBaseUrl
from notify import webhooks
from notify.models import WebhookDelivery
from tests import provider_stub as docs
from tests.provider_stub import ProviderStub


@pytest.fixture
def receiver():
    stub = ProviderStub()
    try:
        yield stub
    finally:
        stub.close()


@pytest.mark.django_db
def test_a_failing_receiver_is_retried_and_every_attempt_recorded(world, settings, receiver):
    settings.WEBHOOKS = [{"url": receiver.url + "/h", "secret": "z" * 20}]
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    (delivery,) = webhooks.queue("key.invalid", {"key_id": str(world.key_a.id)})
    receiver.answer(500, {})
    assert webhooks.deliver(delivery.pk) is False
    receiver.answer(200, {})
    assert webhooks.deliver(delivery.pk) is True
    assert webhooks.deliver(delivery.pk) is True, "a redelivered task sends nothing twice"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    assert len(receiver.seen) == 2


def _idle_in_transaction() -> list[str]:
    """Other sessions of this database that hold a transaction open while doing nothing."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%'"
        )
        return [row[0] for row in cursor.fetchall()]


def test_a_hanging_receiver_holds_no_transaction_and_blocks_no_change_of_the_key(
    committed_world, settings, provider_stub, receiver
):
    world = committed_world
    settings.WEBHOOKS = [{"url": receiver.url + "/h", "secret": "z" * 20}]
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    receiver.answer(200, {}, delay=4)  # hangs past the timeout
    (delivery,) = webhooks.queue("key.invalid", {"key_id": str(world.key_a.id)})

    def send() -> None:
        try:
            webhooks.deliver(delivery.pk)
        finally:
            connection.close()

    sender = threading.Thread(target=send)
    sender.start()
    try:
        deadline = time.monotonic() + 5
        while not receiver.seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.seen, "the sender reached the receiver"
        if connection.vendor == "postgresql":
            assert _idle_in_transaction() == [], "nothing waits on the receiver in a transaction"
        assert webhooks.deliver(delivery.pk) is True, "a second sender finds the lease taken"
        provider_stub.answer(401, docs.OPENAI_INVALID)
        jobs.check_key(world.key_a.id)  # the same key turns invalid and notifies again
        assert sender.is_alive(), "the change finished while the sender still waited"
    finally:
        sender.join(timeout=10)
    world.key_a.refresh_from_db()
    assert world.key_a.status == "invalid"
    first = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (first.status, first.attempts, first.last_error) == ("pending", 1, "ReadTimeout")
    assert first.lease_until is None, "the failed attempt gives the delivery back"
    assert len(receiver.seen) == 1, "the second sender sent nothing"
    assert WebhookDelivery.objects.filter(event="key.invalid").count() == 2


@pytest.mark.django_db
def test_a_delivery_that_cannot_even_be_sent_fails_after_its_attempts(world, settings):
    settings.WEBHOOKS = [{"url": "http://[::1", "secret": "z" * 20}]  # not a valid URL
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    (delivery,) = webhooks.queue("key.invalid", {"key_id": str(world.key_a.id)})
    assert webhooks.deliver(delivery.pk) is False, "retried"
    assert webhooks.deliver(delivery.pk) is True, "the last attempt gives up"
    assert webhooks.deliver(delivery.pk) is True
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert delivery.last_error
    assert webhooks.pending() == []


@pytest.mark.django_db
def test_a_stale_attempt_changes_nothing_and_asks_for_no_retry(world, settings, receiver):
    settings.WEBHOOKS = [{"url": receiver.url + "/h", "secret": "z" * 20}]
    (delivery,) = webhooks.queue("key.invalid", {"key_id": str(world.key_a.id)})
    first = webhooks.claim(delivery.pk)
    assert first is not None
    assert webhooks.claim(delivery.pk) is None, "the lease is taken"
    WebhookDelivery.objects.filter(pk=delivery.pk).update(lease_until=None)  # lease ran out
    second = webhooks.claim(delivery.pk)
    assert second is not None and second.attempt == 2
    assert webhooks.settle(second, 200, "") == "delivered"
    assert webhooks.settle(first, 500, "") == "delivered", "the stale answer is ignored"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)


@pytest.mark.django_db
def test_a_claim_never_shows_its_secret(world, settings, receiver):
    secret = "webhook-secret-" + "q" * 20
    settings.WEBHOOKS = [{"url": receiver.url + "/h", "secret": secret}]
    (delivery,) = webhooks.queue("key.invalid", {"key_id": str(world.key_a.id)})
    claim = webhooks.claim(delivery.pk)
    assert claim is not None
    assert secret not in repr(claim) and secret not in str(claim)


@pytest.mark.django_db
def test_the_strict_policy_refuses_a_private_receiver_at_the_time_of_the_post(
    world, settings, receiver
):
    settings.WEBHOOKS = [{"url": receiver.url + "/h", "secret": "z" * 20}]
    settings.WEBHOOK_URL_POLICY = "strict"  # tightened after the delivery was queued
    settings.WEBHOOK_URL_ALLOWLIST = []
    settings.PROVIDER_URL_ALLOWLIST = [receiver.url.split("//")[1]]  # not the webhooks' list
    (delivery,) = webhooks.queue("key.invalid", {"key_id": str(world.key_a.id)})
    receiver.answer(200, {})
    assert webhooks.deliver(delivery.pk) is False, "a refused attempt is retried later"
    assert receiver.seen == [], "nothing was sent"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        "pending",
        1,
        "egress_refused",
    )
    settings.WEBHOOK_URL_ALLOWLIST = [receiver.url.split("//")[1]]  # host:port
    assert webhooks.deliver(delivery.pk) is True
    assert len(receiver.seen) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://[2002:a9fe:a9fe::]/h",  # 6to4 of 169.254.169.254
        "https://[64:ff9b::7f00:1]/h",  # NAT64 of 127.0.0.1
        "https://[::ffff:10.0.0.1]/h",  # IPv4-mapped
        "https://169.254.169.254/latest/meta-data",
        "http://example.com/h",
    ],
)
@pytest.mark.django_db
def test_the_strict_policy_refuses_tunnelled_and_metadata_receivers(world, settings, url):
    settings.WEBHOOKS = [{"url": url, "secret": "z" * 20}]
    settings.WEBHOOK_URL_POLICY = "strict"
    settings.WEBHOOK_URL_ALLOWLIST = []
    (delivery,) = webhooks.queue("key.invalid", {"key_id": str(world.key_a.id)})
    assert webhooks.deliver(delivery.pk) is False
    delivery.refresh_from_db()
    assert delivery.last_error == "egress_refused"


def test_a_webhook_connects_to_the_address_its_policy_checked(settings):
    settings.WEBHOOK_URL_POLICY = "strict"
    settings.WEBHOOK_URL_ALLOWLIST = ["127.0.0.0/8", "::1/128"]
    settings.PROVIDER_URL_POLICY = "strict"
    settings.PROVIDER_URL_ALLOWLIST = []
    target = egress.pin("https://localhost:9443/h", webhooks.policy())
    assert target.url in ("https://127.0.0.1:9443/h", "https://[::1]:9443/h")
    assert (target.headers(), target.extensions()) == (
        {"Host": "localhost:9443"},
        {"sni_hostname": "localhost"},
    )
    with pytest.raises(ForbiddenBaseUrl):  # the provider policy has its own allowlist
        kms_egress.pin("https://localhost:9443/v1")
