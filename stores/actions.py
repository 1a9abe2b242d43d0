"""State changes of the secret stores that are not a key's: re-wrapping the local store."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from audit.actors import Actor
from audit.recorder import record
from stores.local import rewrap_all


def do_rewrap_master_key(*, actor: Actor) -> tuple[int, int]:
    """Re-wrap every local-store data key under the newest master key; returns (how many
    were re-wrapped, the newest key id). Nothing to do without a master key ring."""
    if not settings.MASTER_KEYS:
        return 0, 0
    changed = rewrap_all()
    newest = max(settings.MASTER_KEYS)
    with transaction.atomic(durable=True):
        record(
            "store.master_key_rewrapped",
            actor=actor,
            details={"master_key_id": newest, "rewrapped": changed},
        )
    return changed, newest
