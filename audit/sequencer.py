"""Integrating committed events into their chains: one sequencer at a time, cluster-wide.

Each batch is one durable transaction: it takes the sequencer lock (a transaction-scoped
advisory lock on PostgreSQL; SQLite's IMMEDIATE transactions admit one writer anyway),
reads the oldest pending pointers, checks each event's MAC, links the good ones after
their chain's head (seq, prev_hash, hash as RFC 6962-style chain hashes, and the leaf hash),
stores the Merkle subtrees those leaves complete, records a rejection for the others, and
deletes the pointers it handled. A sequencer killed
mid-batch leaves the transaction uncommitted: nothing is lost and nothing is linked twice.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.chain import GENESIS, MAC_FIELDS, canonical_bytes, chain_hash, mac_ok
from audit.hmac import event_mac_key
from audit.merkle import ProofError, leaf_hash
from audit.models import (
    AuditEvent,
    AuditLink,
    AuditPending,
    AuditRejection,
    AuditTreeNode,
    Outcome,
)
from audit.recorder import record
from audit.tree import new_nodes

logger = logging.getLogger("keyward.audit")

SEQUENCER = Actor.system("sequencer")
LOCK_KEY = 0x6B7761756474  # "kwaudt": the cluster-wide sequencer lock
BATCH = 2000


@dataclass
class Batch:
    """What one run integrated (event ids in order) and rejected (id -> reason)."""

    integrated: list[uuid.UUID] = field(default_factory=list)
    rejected: dict[uuid.UUID, str] = field(default_factory=dict)
    busy: bool = False  # another sequencer held the lock


def integrate(limit: int = BATCH) -> Batch:
    """Integrate up to `limit` pending events, oldest first."""
    with transaction.atomic(durable=True):
        if not _lock():
            return Batch(busy=True)
        pending = list(AuditPending.objects.order_by("id").values_list("id", "event_id")[:limit])
        if not pending:
            return Batch()
        batch = _link([event_id for _, event_id in pending])
        AuditPending.objects.filter(id__in=[pk for pk, _ in pending]).delete()
        for event_id, reason in batch.rejected.items():
            record(
                "audit.event_rejected",
                actor=SEQUENCER,
                outcome=Outcome.ERROR,
                details={"event_id": str(event_id), "reason": reason},
            )
    return batch


def integrate_all() -> int:
    """Integrate until nothing is pending; returns how many events were linked."""
    total = 0
    while True:
        batch = integrate()
        total += len(batch.integrated)
        if batch.busy or not (batch.integrated or batch.rejected):
            return total


def _lock() -> bool:
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
        row = cursor.fetchone()
    return bool(row and row[0])


def _link(event_ids: list[uuid.UUID]) -> Batch:
    events = {
        e["id"]: e for e in AuditEvent.objects.filter(id__in=event_ids).values(*MAC_FIELDS, "mac")
    }
    linked = set(
        AuditLink.objects.filter(event_id__in=event_ids).values_list("event_id", flat=True)
    )
    key, now = event_mac_key(), timezone.now()
    heads: dict[str, tuple[int, str]] = {}
    sizes: dict[str, int] = {}  # each chain's size before this batch
    batch, links = Batch(), []
    for event_id in event_ids:
        event = events.get(event_id)
        reason = _refusal(key, event, event_id in linked)
        if event is None or reason:
            batch.rejected[event_id] = reason
            continue
        chain = event["chain"]
        if chain not in heads:
            heads[chain] = _head(chain)
            sizes[chain] = heads[chain][0]
        seq, prev = heads[chain]
        leaf = leaf_hash(canonical_bytes({**event, "seq": seq + 1}))
        digest = chain_hash(prev, leaf)
        links.append(
            AuditLink(
                event_id=event_id,
                chain=chain,
                seq=seq + 1,
                prev_hash=prev,
                hash=digest,
                leaf_hash=leaf.hex(),
                integrated_at=now,
            )
        )
        heads[chain] = (seq + 1, digest)
        batch.integrated.append(event_id)
    AuditLink.objects.bulk_create(links)
    AuditTreeNode.objects.bulk_create(
        [node for chain, size in sizes.items() for node in _grown(chain, size, heads[chain][0])]
    )
    AuditRejection.objects.bulk_create(
        [AuditRejection(event_id=i, reason=r, rejected_at=now) for i, r in batch.rejected.items()],
        ignore_conflicts=True,
    )
    return batch


def _grown(chain: str, old_size: int, new_size: int) -> list[AuditTreeNode]:
    """The chain's new stored subtrees (a stored subtree found missing is rebuilt from the
    leaves); none when a leaf they are built from is gone (a link removed behind the
    log's back): that chain's events are still linked, the other chains' trees still
    grow, and the signer refuses that chain, naming what is missing."""
    try:
        return new_nodes(chain, old_size, new_size)
    except ProofError as exc:
        logger.error("audit chain %s: its stored tree cannot grow: %s", chain, exc)
        return []


def _refusal(key: bytes, event: dict[str, Any] | None, already_linked: bool) -> str:
    if event is None:
        return "no such event"
    if already_linked:
        return "already integrated"
    if not mac_ok(key, event):
        return "MAC does not verify (written without the event key)"
    return ""


def _head(chain: str) -> tuple[int, str]:
    last = AuditLink.objects.filter(chain=chain).order_by("-seq").values_list("seq", "hash").first()
    return (int(last[0]), str(last[1])) if last else (0, GENESIS)
