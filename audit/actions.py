"""Reads of the audit log that are themselves audited."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.actors import Actor
from audit.hmac import audit_hmac
from audit.recorder import record


def do_lookup_hmac(value: str, *, actor: Actor) -> str:
    """The audit HMAC of `value`, so an auditor can search for it; the look-up is audited
    without the value."""
    with transaction.atomic(durable=True):
        record("audit.hmac_lookup", actor=actor, details={})
    return audit_hmac(value)


def do_note_search(filters: dict[str, Any], returned: int, *, actor: Actor) -> None:
    """Audit a search of the log: its filters and how many events it returned."""
    with transaction.atomic(durable=True):
        record("audit.searched", actor=actor, details={"filters": filters, "returned": returned})


def do_note_read(action: str, details: dict[str, Any], *, actor: Actor) -> None:
    """Audit a read of the log's proofs, checkpoints or verification (`audit.<what>`)."""
    with transaction.atomic(durable=True):
        record(action, actor=actor, details=details)
