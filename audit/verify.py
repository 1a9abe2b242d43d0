"""Verifying the chains stored in the database, and that every event is accounted for.

Rows are read with a plain server-side cursor (the ORM's per-row cost would dominate), and
on PostgreSQL large logs are verified chain by chain in parallel worker processes. Each
position (`audit_link`) is read with its event (a missing event is reported, not skipped)
and each event's MAC is checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, connections
from django.db.models import Exists, Min, OuterRef, QuerySet
from django.utils import timezone

from audit.chain import GENESIS, HASHED_FIELDS, MAC_FIELDS, ChainResult, mac_ok, verify_events
from audit.hmac import event_mac_key
from audit.merkle import Frontier
from audit.models import AuditEvent, AuditLink, AuditPending, AuditRejection, AuditTreeNode
from core import sql

# The content of an event, then its position.
_EVENT_FIELDS = tuple(f for f in HASHED_FIELDS if f != "seq")
_COLUMNS = (*_EVENT_FIELDS, "mac", "seq", "prev_hash", "hash", "leaf_hash")
# PostgreSQL returns id, time and address already in their canonical text, so Python does
# not build (and then format) UUID and datetime objects for every event.
_AS_TEXT = {
    "id": "l.event_id::text",
    "occurred_at": "to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    "source_ip": "host(e.source_ip)",
    "details": "e.details::text",
    "seq": "l.seq",
    "prev_hash": "l.prev_hash",
    "hash": "l.hash",
    "leaf_hash": "l.leaf_hash",
}
_FROM = (
    " FROM audit_link l LEFT JOIN audit_event e ON e.id = l.event_id"
    " WHERE l.chain = %s AND l.seq > %s"
)
_SELECT_TEXT = (
    f"SELECT {', '.join(_AS_TEXT.get(c, f'e.{c}') for c in _COLUMNS)}" + _FROM + " ORDER BY l.seq"
)
_ROW = sql.Columns.of(AuditEvent, [*_EVENT_FIELDS, "mac"]) + sql.Columns.of(
    AuditLink, ["seq", "prev_hash", "hash", "leaf_hash"]
)
_SELECT = (
    "SELECT "
    + ", ".join(
        [
            "l.event_id",
            *(f"e.{c}" for c in (*_EVENT_FIELDS[1:], "mac")),
            "l.seq",
            "l.prev_hash",
            "l.hash",
            "l.leaf_hash",
        ]
    )
    + _FROM
    + " ORDER BY l.seq"
)
PARALLEL_ABOVE = 200_000  # events; below this a process pool costs more than it saves


def chains() -> list[str]:
    return list(AuditLink.objects.order_by().values_list("chain", flat=True).distinct())


def _events(chain: str, after_seq: int = 0) -> Iterator[dict[str, Any]]:
    if connection.vendor != "postgresql":
        for row in sql.fetch(_SELECT, [chain, after_seq], _ROW):
            yield dict(zip(_COLUMNS, row, strict=True))
        return
    details = _COLUMNS.index("details")
    with connection.cursor() as outer:
        raw = outer.connection
        with raw.transaction(), raw.cursor(name=f"audit_verify_{os.getpid()}") as cursor:
            cursor.itersize = 10_000
            cursor.execute(_SELECT_TEXT, [chain, after_seq])
            for row in cursor:
                event = dict(zip(_COLUMNS, row, strict=True))
                if row[details] is not None:
                    event["details"] = json.loads(row[details])
                yield event


def verify_chain(chain: str, roots_at: Collection[int] = ()) -> ChainResult:
    """The chain's events, MACs and stored Merkle subtrees checked in one walk, with the
    tree's root at each size in `roots_at` that the chain reaches intact."""
    stored = AuditTreeNode.objects.filter(chain=chain).values_list("level", "position", "hash")
    return verify_events(
        chain,
        _events(chain),
        event_mac_key(),
        roots_at=roots_at,
        stored_nodes={(level, position): h for level, position, h in stored},
    )


def verify_after(chain: str, size: int, frontier: Frontier) -> ChainResult:
    """The chain's events past its first `size` (whose tree is `frontier`), checked as
    `verify_chain` checks them: what a signer must see before it signs a larger tree."""
    if size == 0:
        head = GENESIS
    else:
        found = AuditLink.objects.filter(chain=chain, seq=size).values_list("hash", flat=True)
        head = found.first() or GENESIS  # a missing link: the next event will not fit
    return verify_events(chain, _events(chain, size), event_mac_key(), after=(size, head, frontier))


def _verify_in_child(chain: str, roots_at: Collection[int]) -> ChainResult:
    connections.close_all()  # a fresh connection in the worker process
    return verify_chain(chain, roots_at)


def verify_all(
    parallel: bool | None = None,
    roots_at: Mapping[str, Collection[int]] | None = None,
    only: Collection[str] | None = None,
) -> list[ChainResult]:
    """Every chain's result (or those named by `only`), in chain-name order, with the
    tree's root at the sizes asked per chain (a chain named there is verified even when
    the database holds none of it)."""
    roots_at = roots_at or {}
    names = sorted(set(chains()) | set(roots_at))
    if only is not None:
        names = [name for name in names if name in only]
    if parallel is None:
        parallel = (
            connection.vendor == "postgresql"
            and len(names) > 1
            and AuditLink.objects.count() > PARALLEL_ABOVE
        )
    sizes = [roots_at.get(name, ()) for name in names]
    if not parallel:
        return [verify_chain(name, at) for name, at in zip(names, sizes, strict=True)]
    connections.close_all()  # never hand an open connection to forked children
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(_verify_in_child, names, sizes))


@dataclass(frozen=True)
class Integration:
    """Events not (yet) in a chain: waiting for the sequencer, rejected by it, or neither
    (their pending pointer was removed: someone with database access hid them)."""

    pending: int
    oldest_pending: datetime | None
    rejected: list[str]
    unaccounted: list[str]

    def lagging(self, now: datetime | None = None) -> bool:
        """The oldest pending event has waited past the merge delay (with a margin)."""
        now = now or timezone.now()
        limit = timedelta(milliseconds=settings.AUDIT_MERGE_DELAY_MS * 10 + 5000)
        return self.oldest_pending is not None and now - self.oldest_pending > limit

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.unaccounted


def integration(chains: Collection[str] | None = None) -> Integration:
    """What is not (yet) in a chain: of every chain, or of those named."""
    events = (
        AuditEvent.objects.all() if chains is None else AuditEvent.objects.filter(chain__in=chains)
    )
    linked = AuditLink.objects.filter(event_id=OuterRef("pk"))
    waiting = AuditPending.objects.filter(event_id=OuterRef("pk"))
    refused = AuditRejection.objects.filter(event_id=OuterRef("pk"))
    unaccounted = (
        events.filter(~Exists(linked), ~Exists(waiting), ~Exists(refused))
        .order_by("occurred_at")
        .values_list("id", flat=True)[:20]
    )
    pending = events.filter(Exists(waiting))
    return Integration(
        pending=pending.count(),
        oldest_pending=pending.aggregate(oldest=Min("occurred_at"))["oldest"],
        rejected=_rejections(None if chains is None else events),
        unaccounted=[str(i) for i in unaccounted],
    )


def _rejections(events: QuerySet[AuditEvent] | None) -> list[str]:
    """Each rejection with what re-checking it shows now. A rejection of an event whose MAC
    verifies was not the sequencer's (the application role can insert rows): that event
    was hidden on purpose, and is named as such."""
    key, found = event_mac_key(), []
    rejections = AuditRejection.objects.all()
    if events is not None:  # a rejection whose event is gone belongs to no chain
        rejections = rejections.filter(Exists(events.filter(pk=OuterRef("event_id"))))
    rows = rejections.order_by("rejected_at").values_list("event_id", "reason")
    for event_id, reason in rows[:20]:
        event = AuditEvent.objects.filter(pk=event_id).values(*MAC_FIELDS, "mac").first()
        if event is not None and mac_ok(key, event):
            found.append(f"{event_id} (its MAC verifies: hidden behind a planted rejection)")
        else:
            found.append(f"{event_id} ({reason})")
    return found
