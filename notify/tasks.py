"""Webhook delivery tasks, and `notify()`, which queues a delivery and hands it to them
once the caller's transaction commits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from celery import shared_task
from django.db import transaction

from notify import webhooks
from notify.models import WebhookDelivery


class WebhookNotDelivered(Exception):
    """The receiver did not answer 2xx; the task retries with backoff."""


@shared_task(
    name="keyward.kms.deliver_webhook",
    acks_late=True,
    max_retries=8,
    autoretry_for=(WebhookNotDelivered,),
    retry_backoff=5,
    retry_backoff_max=3600,
    retry_jitter=True,
)
def deliver_webhook(delivery_id: str) -> None:
    if not webhooks.deliver(delivery_id):
        raise WebhookNotDelivered()


@shared_task(name="keyward.kms.deliver_pending_webhooks", acks_late=True)
def deliver_pending_webhooks() -> None:
    for delivery_id in webhooks.pending():
        deliver_webhook.delay(delivery_id)


def notify(event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Queue `event` for every webhook that wants it. Call inside the event's transaction."""
    deliveries = webhooks.queue(event, payload)
    for delivery in deliveries:
        transaction.on_commit(_sender(delivery.pk), robust=True)
    return deliveries


def _sender(delivery_id: UUID) -> Callable[[], None]:
    """A named callback (robust on_commit logs its name if the broker refuses it; the row
    stays pending and the sweep sends it later)."""

    def send_webhook() -> None:
        deliver_webhook.delay(str(delivery_id))

    return send_webhook
