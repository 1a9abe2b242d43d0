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
from audit.context import current_origin
from audit.models import AuditEvent, Outcome
from audit.sanitize import clean_text, clean_value
from settings.errors import ServiceUnavailable

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


def _append(
    action: str,
    actor: Actor,
    outcome: str,
    tenant: str | None,
    target: str,
    details: dict[str, Any],
) -> AuditEvent:
    chain = chain_for(tenant)
    if connection.vendor == "postgresql":
        return _append_postgresql(chain, action, actor, outcome, tenant, target, details)
    head = (
        AuditEvent.objects.filter(chain=chain).order_by("-seq").values_list("seq", "hash").first()
    )
    event = _event(chain, head, action, actor, outcome, tenant, target, details)
    event.save(force_insert=True)
    return event


def _event(
    chain: str,
    head: tuple[int, str] | None,
    action: str,
    actor: Actor,
    outcome: str,
    tenant: str | None,
    target: str,
    details: dict[str, Any],
) -> AuditEvent:
    seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS)
    origin = current_origin()
    event = AuditEvent(
        id=uuid.uuid4(),
        chain=chain,
        seq=seq,
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
    return event


_INSERT = (
    "INSERT INTO audit_event (id, chain, seq, occurred_at, actor_type, actor_id, action, tenant,"
    " target, outcome, request_id, source_ip, details, prev_hash, hash)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _append_postgresql(
    chain: str,
    action: str,
    actor: Actor,
    outcome: str,
    tenant: str | None,
    target: str,
    details: dict[str, Any],
) -> AuditEvent:
    """The same append in three plain statements: this runs on every audited request,
    and the ORM's per-query cost is larger than the database's here."""
    with connection.cursor() as cursor:
        # The lock and the head read are separate statements on purpose: under READ
        # COMMITTED each statement takes its own snapshot, so the head is read after the
        # lock is held and sees the previous holder's committed event.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [chain])
        cursor.execute(
            "SELECT seq, hash FROM audit_event WHERE chain = %s ORDER BY seq DESC LIMIT 1", [chain]
        )
        row = cursor.fetchone()
        event = _event(chain, row, action, actor, outcome, tenant, target, details)
        cursor.execute(
            _INSERT,
            [
                event.id,
                event.chain,
                event.seq,
                event.occurred_at,
                event.actor_type,
                event.actor_id,
                event.action,
                event.tenant,
                event.target,
                event.outcome,
                event.request_id,
                event.source_ip,
                json.dumps(event.details),
                event.prev_hash,
                event.hash,
            ],
        )
    event._state.adding = False
    return event
