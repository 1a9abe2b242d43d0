"""The webhook outbox."""

from __future__ import annotations

import uuid

from django.db import models


class WebhookDelivery(models.Model):
    """One notification to one configured URL; written in the transaction of the event it
    reports, so it cannot be lost, and sent (and re-sent) by a job."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event = models.CharField(max_length=64)
    url = models.CharField(max_length=2048)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # While set and in the future, one worker is sending this delivery.
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "kms_webhookdelivery"  # the table predates the notify app
        indexes = [models.Index(fields=("status", "created_at"), name="kms_webhook_pending")]

    def __str__(self) -> str:
        return f"{self.event} -> {self.url} ({self.status})"
