"""Signed webhooks for `key.invalid`, `key.rotation_due`, `key.version_retired`,
`key.upstream_retire_failed` and `audit.chain_broken`.

`notify()` writes one delivery row per configured URL inside the caller's transaction and
hands it to a worker after the commit; the rows are the durable queue, so a broker outage
delays a notification but never loses it (the sweep re-sends what is left).

A delivery never holds a transaction or a row lock while it talks to the receiver: it
claims the row in one short transaction (a lease, the attempt counted), posts outside any
transaction, then records the answer with a compare-and-set on that attempt. Delivery is
at least once: a receiver that stalls past the lease may see a delivery again, so
receivers deduplicate on `X-Keyward-Delivery`.
The signature header is `t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import egress, metrics
from notify.models import WebhookDelivery

EVENTS = frozenset(
    {
        "key.invalid",
        "key.rotation_due",
        "key.version_retired",
        "key.upstream_retire_failed",
        "audit.chain_broken",
    }
)
PENDING, DELIVERED, FAILED = (
    WebhookDelivery.Status.PENDING,
    WebhookDelivery.Status.DELIVERED,
    WebhookDelivery.Status.FAILED,
)


class UnknownEvent(ValueError):
    """A programming error: an event no webhook can subscribe to."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _targets(event: str) -> list[dict[str, Any]]:
    return [hook for hook in settings.WEBHOOKS if event in hook.get("events", EVENTS)]


def queue(event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Write one pending delivery of `event` per webhook that wants it, in the caller's
    transaction."""
    if event not in EVENTS:
        raise UnknownEvent(event)
    body = {"event": event, "occurred_at": timezone.now().isoformat(), **payload}
    return [
        WebhookDelivery.objects.create(event=event, url=hook["url"], payload=body)
        for hook in _targets(event)
    ]


@dataclass(frozen=True)
class Claim:
    """One attempt at one delivery, claimed for the lease period."""

    delivery_id: UUID
    attempt: int
    url: str
    event: str
    body: bytes = field(repr=False)
    secret: str = field(repr=False)


def claim(delivery_id: UUID | str) -> Claim | None:
    """Take a pending delivery whose lease is free, counting the attempt; None when there is
    nothing to send (delivered, failed, out of attempts, or another worker holds the
    lease)."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(pk=delivery_id, status=PENDING)
            .first()
        )
        if delivery is None or (delivery.lease_until and delivery.lease_until > now):
            return None
        hook = next((h for h in settings.WEBHOOKS if h["url"] == delivery.url), None)
        if hook is None or delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            delivery.status = FAILED
            delivery.last_error = delivery.last_error if hook else "webhook no longer configured"
            delivery.save(update_fields=["status", "last_error"])
            return None
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.lease_until = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 5)
        delivery.save(update_fields=["attempts", "last_attempt_at", "lease_until"])
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    return Claim(delivery.id, delivery.attempts, delivery.url, delivery.event, body, hook["secret"])


def policy() -> egress.Policy:
    return egress.Policy(
        strict=settings.WEBHOOK_URL_POLICY == "strict",
        allowlist=tuple(settings.WEBHOOK_URL_ALLOWLIST),
        subject="webhook URL",
    )


def post(attempt: Claim) -> tuple[int | None, str]:
    """Send one claimed attempt: (HTTP status or None, error class name or "")."""
    try:  # the policy of now, and the address it checked
        destination = egress.pin(attempt.url, policy())
    except egress.Refused:
        return None, "egress_refused"
    stamp = int(time.time())
    headers = {
        **destination.headers(),
        "Content-Type": "application/json",
        "User-Agent": "keyward-webhooks/1",
        "X-Keyward-Event": attempt.event,
        "X-Keyward-Delivery": str(attempt.delivery_id),
        "X-Keyward-Signature": sign(attempt.secret, stamp, attempt.body),
    }
    try:
        # Only the status matters: the body is never read, so a receiver cannot stall a
        # worker by dripping it.
        timeout = settings.WEBHOOK_TIMEOUT_SECONDS
        with (
            httpx.Client(
                timeout=timeout, follow_redirects=False, verify=egress.tls_context()
            ) as client,
            client.stream(
                "POST",
                destination.url,
                content=attempt.body,
                headers=headers,
                extensions=destination.extensions(),
            ) as response,
        ):
            return response.status_code, ""
    except Exception as exc:  # whatever failed (a bad URL too), the attempt is recorded
        return None, type(exc).__name__


def settle(attempt: Claim, status_code: int | None, error: str) -> str:
    """Record an attempt's answer if the row is still on that attempt; returns the status
    it recorded, or `delivered` when another attempt has since taken the row over (there
    is then nothing left for this one to retry)."""
    ok = status_code is not None and 200 <= status_code < 300
    status = PENDING
    if ok:
        status = DELIVERED
    elif attempt.attempt >= settings.WEBHOOK_MAX_ATTEMPTS:
        status = FAILED
    if not ok:
        metrics.WEBHOOK_FAILURES.labels("failed" if status == FAILED else "retrying").inc()
    won = WebhookDelivery.objects.filter(
        pk=attempt.delivery_id, status=PENDING, attempts=attempt.attempt
    ).update(
        status=status,
        last_status_code=status_code,
        last_error=error,
        lease_until=None,
        delivered_at=timezone.now() if ok else None,
    )
    return str(status) if won else str(DELIVERED)


def deliver(delivery_id: UUID | str) -> bool:
    """Send one delivery once; False only when it should be retried later."""
    attempt = claim(delivery_id)
    if attempt is None:
        return True
    return settle(attempt, *post(attempt)) != PENDING


def pending() -> list[str]:
    """Deliveries still waiting a while after they were written (e.g. the broker was down)."""
    cutoff = timezone.now() - timedelta(seconds=settings.WEBHOOK_SWEEP_AFTER_SECONDS)
    return [
        str(pk)
        for pk in WebhookDelivery.objects.filter(status=PENDING, created_at__lt=cutoff)
        .exclude(lease_until__gt=timezone.now())
        .values_list("id", flat=True)
    ]
