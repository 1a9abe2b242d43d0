"""The one way events enter the audit log.

`record` writes inside the caller's transaction: if the event cannot be written, the
exception rolls back the action it describes, so no audited action commits without its
event. It takes no lock and reads nothing: the event carries a MAC under a key the database
never holds, and a pending pointer hands it to the sequencer (`audit.sequencer`), which
integrates committed events into their chain within the merge delay.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.chain import event_mac
from audit.hmac import event_mac_key
from audit.models import AuditEvent, AuditPending, Outcome
from audit.sanitize import clean_text, clean_value
from core import asql, sql
from core.context import current_origin
from core.errors import DomainError, ServiceUnavailable

GLOBAL_CHAIN = "global"
_SOURCE_IP = AuditEvent._meta.get_field("source_ip")


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
    """Write one event for the chain of `tenant` (or the global chain) and return it."""
    return record_with(
        None,
        [],
        action,
        actor=actor,
        outcome=outcome,
        tenant=tenant,
        target=target,
        details=details,
    )


def record_with(
    statement: str | None,
    params: Sequence[sql.Value | str | int | None],
    action: str,
    *,
    actor: Actor,
    outcome: str = Outcome.SUCCESS,
    tenant: str | None = None,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Run an action that is one INSERT, UPDATE or DELETE `statement` (or none) and write
    its event, atomically: inside the caller's transaction when there is one; otherwise,
    on PostgreSQL, as one statement (data-modifying CTEs), which commits on its own in one
    round trip instead of four (BEGIN, action, event, COMMIT)."""
    event = _event(action, actor, outcome, tenant, target, details or {})
    values = _values(event)
    one_statement = connection.vendor == "postgresql" and not connection.in_atomic_block
    try:
        if one_statement:
            prefix = f"WITH a AS ({statement}), " if statement else "WITH "
            sql.execute(prefix + _EVENT_AND_PENDING, [*params, *values])
        else:
            with transaction.atomic(savepoint=False):
                if statement:
                    sql.execute(statement, params)
                _insert(event, values)
    except DatabaseError as exc:  # the action and its event commit together or not at all
        raise AuditUnavailable() from exc
    event._state.adding = False
    return event


async def arecord(
    action: str,
    *,
    actor: Actor,
    outcome: str = Outcome.SUCCESS,
    tenant: str | None = None,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """`record` on the event loop (`core.asql`): the same event in the same one statement,
    committed on its own."""
    event = _event(action, actor, outcome, tenant, target, details or {})
    values = _values(event)
    try:
        await asql.execute("WITH " + _EVENT_AND_PENDING, values)
    except asql.DatabaseUnavailable as exc:
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


def _event(
    action: str,
    actor: Actor,
    outcome: str,
    tenant: str | None,
    target: str,
    details: dict[str, Any],
) -> AuditEvent:
    origin = current_origin()
    event = AuditEvent(
        id=uuid.uuid4(),
        chain=chain_for(tenant),
        occurred_at=timezone.now(),
        actor_type=actor.type,
        actor_id=clean_text(actor.id, 128),
        action=action,
        tenant=tenant or "",
        target=clean_text(target, 255),
        outcome=str(outcome),
        request_id=clean_text(origin.request_id, 64),
        # The stored spelling (IPv4-mapped IPv6 written as ::ffff:a.b.c.d), so that the MAC
        # covers exactly what the sequencer will read back.
        source_ip=_SOURCE_IP.get_prep_value(origin.source_ip),
        details=clean_value(details),
    )
    event.mac = event_mac(event_mac_key(), event.__dict__)
    return event


_EVENT = sql.Columns(list(AuditEvent._meta.concrete_fields))
_VALUES = ", ".join(["%s"] * len(_EVENT))
_INSERT_EVENT = f"INSERT INTO audit_event ({', '.join(_EVENT.names())}) VALUES ({_VALUES})"
_INSERT_PENDING = "INSERT INTO audit_pending (event_id) VALUES (%s)"
# On PostgreSQL, the event and its pending pointer go in with one statement.
_EVENT_AND_PENDING = (
    f"e AS ({_INSERT_EVENT} RETURNING id) INSERT INTO audit_pending (event_id) SELECT id FROM e"
)


# A write of no rows: refused like a real one when the database is read-only, the role may
# not insert into the audit tables, or the database cannot be reached.
_PROBE_EVENT = "INSERT INTO audit_event (id) SELECT id FROM audit_event WHERE 1 = 0"
_PROBE_PENDING = "INSERT INTO audit_pending (event_id) SELECT id FROM audit_event WHERE 1 = 0"
PROBE = f"WITH e AS ({_PROBE_EVENT} RETURNING id) {_PROBE_PENDING}"  # one round trip
# The probe as the head of another statement (PostgreSQL runs every data-modifying WITH
# part whether or not the main query reads it): `f"{PROBE_WITH} SELECT ..."` checks that
# an event could be written and reads, in one round trip.
PROBE_WITH = (
    f"WITH probe_event AS ({_PROBE_EVENT} RETURNING id),"
    f" probe_pending AS ({_PROBE_PENDING} RETURNING event_id)"
)


def probe() -> None:
    """AuditUnavailable unless an event could be written now. For work whose event is
    written when it ends (a proxied call), so that none starts while the log is down."""
    statements = [PROBE] if connection.vendor == "postgresql" else [_PROBE_EVENT, _PROBE_PENDING]
    try:
        # In a savepoint inside a caller's transaction, which a failure must not end.
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            for statement in statements:
                sql.execute(statement, [])
    except DatabaseError as exc:
        raise AuditUnavailable() from exc


def _values(event: AuditEvent) -> list[sql.Value]:
    """The event's columns as parameters, each adapted by its field."""
    return [sql.Value(f, getattr(event, f.attname)) for f in _EVENT.fields]


def _insert(event: AuditEvent, values: list[sql.Value]) -> None:
    if connection.vendor == "postgresql":
        sql.execute("WITH " + _EVENT_AND_PENDING, values)
    else:
        sql.execute(_INSERT_EVENT, values)
        sql.execute(_INSERT_PENDING, [sql.param(AuditPending, "event_id", event.id)])
