"""The append-only audit log.

A request writes an `AuditEvent` (its content and a MAC) and an `AuditPending` pointer in
its own transaction, and takes no lock. The sequencer, one at a time, integrates pending
events into their chain: it checks each MAC, assigns the next position and writes an
`AuditLink` (seq, prev_hash, hash, leaf_hash), or an `AuditRejection` for a bad MAC, and
extends the chain's Merkle tree (`AuditTreeNode`). A chain is one tenant's
(`tenant:<slug>`) or the global one (`global`).

Events, links, tree nodes and rejections are never updated or deleted: the application's
database role may only INSERT and SELECT them, and triggers reject UPDATE, DELETE and
TRUNCATE as a second layer. Only pending pointers are deleted, by the sequencer; an event
that is neither linked, pending nor rejected is reported by verification.
"""

from __future__ import annotations

import uuid

from django.db import models


class Outcome(models.TextChoices):
    SUCCESS = "success"
    DENIED = "denied"
    ERROR = "error"


class AuditEvent(models.Model):
    """One audited action, as its request wrote it; its chain position is its `link`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chain = models.CharField(max_length=80)
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
    mac = models.CharField(max_length=64)

    class Meta:
        db_table = "audit_event"
        ordering = ("occurred_at", "id")
        indexes = [
            models.Index(fields=("occurred_at",), name="audit_event_occurred_idx"),
            models.Index(fields=("tenant", "occurred_at"), name="audit_event_tenant_idx"),
            models.Index(fields=("action", "occurred_at"), name="audit_event_action_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.chain} {self.action} {self.outcome}"


class AuditLink(models.Model):
    """An event's position in its chain, written once by the sequencer."""

    # No database-level foreign key: events and links are both append-only, and a missing
    # event behind a link must be reported by verification, not refused by the database.
    event = models.OneToOneField(
        AuditEvent,
        on_delete=models.DO_NOTHING,
        primary_key=True,
        db_constraint=False,
        related_name="link",
    )
    chain = models.CharField(max_length=80)
    seq = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    # The event's leaf in its chain's Merkle tree: SHA-256(0x00 || canonical content).
    leaf_hash = models.CharField(max_length=64, default="")
    integrated_at = models.DateTimeField()

    class Meta:
        db_table = "audit_link"
        ordering = ("chain", "seq")
        constraints = [
            models.UniqueConstraint(fields=("chain", "seq"), name="audit_link_chain_seq_unique"),
            models.UniqueConstraint(
                fields=("chain", "prev_hash"), name="audit_link_chain_prev_unique"
            ),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_link_seq_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.chain}#{self.seq}"


class AuditTreeNode(models.Model):
    """A complete subtree of a chain's Merkle tree, at a level that is a multiple of the
    tree's stride (the leaves are the links' `leaf_hash`): written once, by the sequencer,
    when its last leaf is integrated. Any other node is hashed from these on demand."""

    chain = models.CharField(max_length=80)
    level = models.PositiveSmallIntegerField()
    position = models.BigIntegerField()  # covers leaves [position << level, (position+1) << level)
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "audit_tree_node"
        constraints = [
            models.UniqueConstraint(
                fields=("chain", "level", "position"), name="audit_tree_node_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.chain} L{self.level}#{self.position}"


class AuditPending(models.Model):
    """An event written but not yet integrated; the sequencer takes these in order."""

    event_id = models.UUIDField(unique=True)

    class Meta:
        db_table = "audit_pending"
        ordering = ("id",)

    def __str__(self) -> str:
        return str(self.event_id)


class AuditRejection(models.Model):
    """An event the sequencer refused to integrate (its MAC does not verify)."""

    event_id = models.UUIDField(primary_key=True)
    reason = models.CharField(max_length=200)
    rejected_at = models.DateTimeField()

    class Meta:
        db_table = "audit_rejection"

    def __str__(self) -> str:
        return f"{self.event_id}: {self.reason}"


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
