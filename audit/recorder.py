"""The one way events enter the audit log.

`record` writes inside the caller's transaction: if the event cannot be written, the
exception rolls back the action it describes, so no audited action commits without its
event. Appends to one chain are serialised (a transaction-scoped advisory lock on
PostgreSQL, the IMMEDIATE write lock on SQLite), and a unique (chain, seq) constraint is the
last guard against a fork.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.chain import GENESIS, canonical_bytes, link_hash
from audit.models import AuditEvent, Outcome
from audit.sanitize import clean_text, clean_value
from core.context import current_origin
from core.errors import DomainError, ServiceUnavailable

GLOBAL_CHAIN = "global"


class AuditUnavailable(ServiceUnavailable):
    code = "audit_unavailable"
    message = "The audit log cannot record this action, so it was not carried out."


def chain_for(tenant: str | None) -> str:
    return f"tenant:{tenant}" if tenant else GLOBAL_CHAIN


def record(
    action: str,
    *,
    actor: Actor,
    outcome: str = Outcome.SUCCESS,
    tenant: str | None = None,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain of `tenant` (or the global chain) and return it."""
    try:
        with transaction.atomic(savepoint=False):
            return _append(action, actor, outcome, tenant, target, details or {})
    except DatabaseError as exc:
        raise AuditUnavailable() from exc


def record_refusal(
    action: str, *, actor: Actor, refusal: DomainError | None = None, **event: Any
) -> None:
    """Audit a refused or failed request in a transaction of its own: the action it
    describes did not happen, so the event must commit without it. `event` takes the
    other arguments of `record` (outcome defaults to denied). `refusal`, the error about to
    be raised, is marked as audited so that it is not recorded twice."""
    event.setdefault("outcome", Outcome.DENIED)
    with transaction.atomic(durable=True):
        record(action, actor=actor, **event)
    if refusal is not None:
        refusal.audited = True


def _append(
    action: str,
    actor: Actor,
    outcome: str,
    tenant: str | None,
    target: str,
    details: dict[str, Any],
) -> AuditEvent:
    chain = chain_for(tenant)
    seq, prev_hash = _head(chain) or (0, GENESIS)
    origin = current_origin()
    event = AuditEvent(
        id=uuid.uuid4(),
        chain=chain,
        seq=seq + 1,
        occurred_at=timezone.now(),
        actor_type=actor.type,
        actor_id=clean_text(actor.id, 128),
        action=action,
        tenant=tenant or "",
        target=clean_text(target, 255),
        outcome=str(outcome),
        request_id=clean_text(origin.request_id, 64),
        source_ip=origin.source_ip,
        details=clean_value(details),
        prev_hash=prev_hash,
    )
    event.hash = link_hash(prev_hash, canonical_bytes(event.__dict__))
    _insert(event)
    return event


def _head(chain: str) -> tuple[int, str] | None:
    """The chain's last (seq, hash), read after taking the chain's lock.

    On PostgreSQL these are plain statements (this runs on every audited request, and the
    ORM's per-query cost exceeds the database's), and the lock and the read are separate
    statements on purpose: under READ COMMITTED each statement takes its own snapshot, so
    the read sees the previous lock holder's committed event. SQLite's IMMEDIATE
    transactions already serialise writers."""
    if connection.vendor != "postgresql":
        return (
            AuditEvent.objects.filter(chain=chain)
            .order_by("-seq")
            .values_list("seq", "hash")
            .first()
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [chain])
        cursor.execute(
            "SELECT seq, hash FROM audit_event WHERE chain = %s ORDER BY seq DESC LIMIT 1", [chain]
        )
        row = cursor.fetchone()
    return (int(row[0]), str(row[1])) if row else None


_COLUMNS = (
    "id",
    "chain",
    "seq",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "tenant",
    "target",
    "outcome",
    "request_id",
    "source_ip",
    "details",
    "prev_hash",
    "hash",
)
_INSERT = (
    f"INSERT INTO audit_event ({', '.join(_COLUMNS)})"  # noqa: S608 - constant column names
    f" VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
)


def _insert(event: AuditEvent) -> None:
    if connection.vendor != "postgresql":
        event.save(force_insert=True)
        return
    values = [getattr(event, c) for c in _COLUMNS]
    values[_COLUMNS.index("details")] = json.dumps(event.details)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, values)
    event._state.adding = False
