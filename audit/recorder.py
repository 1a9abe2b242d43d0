"""The one way events enter the audit log.

`record` writes inside the caller's transaction: if the event cannot be written, the
exception rolls back the action it describes, so no audited action commits without its
event. Appends to one chain are serialised (a transaction-scoped advisory lock on
PostgreSQL, the IMMEDIATE write lock on SQLite), and a unique (chain, seq) constraint is the
last guard against a fork.
"""

from __future__ import annotations

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
    _lock_chain(chain)
    head = (
        AuditEvent.objects.filter(chain=chain).order_by("-seq").values_list("seq", "hash").first()
    )
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
    event.save(force_insert=True)
    return event


def _lock_chain(chain: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [chain])
