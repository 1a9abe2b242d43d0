"""The append-only audit log: one row per security-relevant action, hash-chained per chain.

A chain is either one tenant's (`tenant:<slug>`) or the global one (`global`). Rows are
never updated or deleted: the application's database role may only INSERT and SELECT, and
triggers installed by the migrations reject UPDATE, DELETE and TRUNCATE as a second layer.
"""

from __future__ import annotations

import uuid

from django.db import models


class Outcome(models.TextChoices):
    SUCCESS = "success"
    DENIED = "denied"
    ERROR = "error"


class AuditEvent(models.Model):
    """One audited action, linked to its predecessor in the same chain by `prev_hash`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chain = models.CharField(max_length=80)
    seq = models.BigIntegerField()
    occurred_at = models.DateTimeField()
    actor_type = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=128, blank=True)
    action = models.CharField(max_length=64)
    tenant = models.CharField(max_length=63, blank=True)
    target = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    request_id = models.CharField(max_length=64, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "audit_event"
        ordering = ("chain", "seq")
        constraints = [
            models.UniqueConstraint(fields=("chain", "seq"), name="audit_event_chain_seq_unique"),
            models.UniqueConstraint(
                fields=("chain", "prev_hash"), name="audit_event_chain_prev_unique"
            ),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_event_seq_positive"),
        ]
        indexes = [
            models.Index(fields=("occurred_at",), name="audit_event_occurred_idx"),
            models.Index(fields=("tenant", "occurred_at"), name="audit_event_tenant_idx"),
            models.Index(fields=("action", "occurred_at"), name="audit_event_action_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.chain}#{self.seq} {self.action} {self.outcome}"


class ChainCheck(models.Model):
    """The last verification result of one chain (written by the periodic job)."""

    chain = models.CharField(max_length=80, primary_key=True)
    ok = models.BooleanField()
    events_checked = models.BigIntegerField()
    head = models.CharField(max_length=64)
    first_bad = models.CharField(max_length=500, blank=True)
    checked_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.chain}: {'ok' if self.ok else 'BROKEN'}"


class Checkpoint(models.Model):
    """A signed export's manifest digest; each manifest names the one before it."""

    manifest_sha256 = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    count = models.BigIntegerField()
    chains = models.JSONField(default=dict)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return self.manifest_sha256
