"""Signed webhooks for `key.invalid`, `key.rotation_due`, `key.version_retired` and
`audit.chain_broken`.

`notify()` writes one delivery row per configured URL inside the caller's transaction and
hands it to a worker after the commit; the rows are the durable queue, so a broker outage
delays a notification but never loses it (`deliver_pending` re-sends what is left).
The signature header is `t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from kms.models import WebhookDelivery

EVENTS = frozenset({"key.invalid", "key.rotation_due", "key.version_retired", "audit.chain_broken"})
logger = logging.getLogger("keyward.webhooks")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _targets(event: str) -> list[dict[str, Any]]:
    return [hook for hook in settings.WEBHOOKS if event in hook.get("events", EVENTS)]


def notify(event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Queue `event` for every webhook that wants it. Call inside the event's transaction."""
    assert event in EVENTS
    body = {"event": event, "occurred_at": timezone.now().isoformat(), **payload}
    deliveries = [
        WebhookDelivery.objects.create(event=event, url=hook["url"], payload=body)
        for hook in _targets(event)
    ]
    for delivery in deliveries:
        transaction.on_commit(_sender(delivery.pk), robust=True)
    return deliveries


def _sender(delivery_id: UUID) -> Callable[[], None]:
    """A named callback (robust on_commit logs its name if the broker refuses it; the row
    stays pending and the sweep sends it later)."""

    def send_webhook() -> None:
        from kms.tasks import deliver_webhook

        deliver_webhook.delay(str(delivery_id))

    return send_webhook


def deliver(delivery_id: UUID | str) -> bool:
    """Send one delivery once; True when the receiver answered 2xx. Each attempt is kept."""
    with transaction.atomic(durable=True):
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
            return True
        hook = next((h for h in settings.WEBHOOKS if h["url"] == delivery.url), None)
        if hook is None:
            delivery.status, delivery.last_error = (
                WebhookDelivery.Status.FAILED,
                "webhook no longer configured",
            )
            delivery.save(update_fields=["status", "last_error"])
            return True
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "keyward-webhooks/1",
            "X-Keyward-Event": delivery.event,
            "X-Keyward-Delivery": str(delivery.id),
            "X-Keyward-Signature": sign(hook["secret"], stamp, body),
        }
        delivery.attempts += 1
        delivery.last_attempt_at = timezone.now()
        try:
            response = httpx.post(
                delivery.url, content=body, headers=headers, timeout=5.0, follow_redirects=False
            )
            delivery.last_status_code, delivery.last_error = response.status_code, ""
            ok = 200 <= response.status_code < 300
        except httpx.HTTPError as exc:
            delivery.last_status_code, delivery.last_error, ok = None, type(exc).__name__, False
        if ok:
            delivery.status, delivery.delivered_at = (
                WebhookDelivery.Status.DELIVERED,
                timezone.now(),
            )
        elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            delivery.status = WebhookDelivery.Status.FAILED
        delivery.save()
    return ok or delivery.status == WebhookDelivery.Status.FAILED


def pending() -> list[str]:
    """Deliveries still waiting a while after they were written (e.g. the broker was down)."""
    cutoff = timezone.now() - timedelta(seconds=settings.WEBHOOK_SWEEP_AFTER_SECONDS)
    return [
        str(pk)
        for pk in WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, created_at__lt=cutoff
        ).values_list("id", flat=True)
    ]
