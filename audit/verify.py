"""Verifying the chains stored in the database.

Rows are read with a plain server-side cursor (the ORM's per-row cost would dominate), and
on PostgreSQL large logs are verified chain by chain in parallel worker processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from django.db import connection, connections

from audit.chain import HASHED_FIELDS, ChainResult, verify_events
from audit.models import AuditEvent

_COLUMNS = (*HASHED_FIELDS, "prev_hash", "hash")
# PostgreSQL returns id, time and address already in their canonical text, so Python does
# not build (and then format) UUID and datetime objects for every event.
_AS_TEXT = {
    "id": "id::text",
    "occurred_at": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    "source_ip": "host(source_ip)",
    "details": "details::text",
}
_SELECT = (
    f"SELECT {', '.join(_AS_TEXT.get(c, c) for c in _COLUMNS)} FROM audit_event"  # noqa: S608
    " WHERE chain = %s ORDER BY seq"
)
PARALLEL_ABOVE = 200_000  # events; below this a process pool costs more than it saves


def chains() -> list[str]:
    return list(AuditEvent.objects.order_by().values_list("chain", flat=True).distinct())


def _events(chain: str) -> Iterator[dict[str, Any]]:
    if connection.vendor != "postgresql":
        rows = AuditEvent.objects.filter(chain=chain).order_by("seq").values_list(*_COLUMNS)
        for row in rows.iterator(chunk_size=5000):
            yield dict(zip(_COLUMNS, row, strict=True))
        return
    details = _COLUMNS.index("details")
    with connection.cursor() as outer:
        raw = outer.connection
        with raw.transaction(), raw.cursor(name=f"audit_verify_{os.getpid()}") as cursor:
            cursor.itersize = 10_000
            cursor.execute(_SELECT, [chain])
            for row in cursor:
                event = dict(zip(_COLUMNS, row, strict=True))
                event["details"] = json.loads(row[details])
                yield event


def verify_chain(chain: str) -> ChainResult:
    return verify_events(chain, _events(chain))


def _verify_in_child(chain: str) -> ChainResult:
    connections.close_all()  # a fresh connection in the worker process
    return verify_chain(chain)


def verify_all(parallel: bool | None = None) -> list[ChainResult]:
    """Every chain's result, in chain-name order."""
    names = sorted(chains())
    if parallel is None:
        parallel = (
            connection.vendor == "postgresql"
            and len(names) > 1
            and AuditEvent.objects.count() > PARALLEL_ABOVE
        )
    if not parallel:
        return [verify_chain(name) for name in names]
    connections.close_all()  # never hand an open connection to forked children
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(_verify_in_child, names))
