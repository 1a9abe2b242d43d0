"""Periodic verification of every audit chain."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from audit.actors import Actor
from audit.models import ChainCheck, Outcome
from audit.recorder import record
from audit.verify import verify_all
from notify.tasks import notify


def verify_chains() -> list[str]:
    """Verify every chain, keep each one's result, and record `audit.chain_broken` when a
    chain turns bad (not again on every run while it stays bad). Returns the broken chains."""
    broken = []
    now = timezone.now()
    for result in verify_all():
        first_bad = result.first_bad.describe() if result.first_bad else ""
        with transaction.atomic(durable=True):
            previous = ChainCheck.objects.select_for_update().filter(chain=result.chain).first()
            newly_broken = not result.ok and (
                previous is None or previous.ok or previous.first_bad != first_bad
            )
            ChainCheck.objects.update_or_create(
                chain=result.chain,
                defaults={
                    "ok": result.ok,
                    "events_checked": result.events_checked,
                    "head": result.head,
                    "first_bad": first_bad[:500],
                    "checked_at": now,
                },
            )
            if newly_broken:
                notify("audit.chain_broken", {"chain": result.chain, "first_bad": first_bad[:500]})
                record(
                    "audit.chain_broken",
                    actor=Actor.system("audit_verify"),
                    outcome=Outcome.ERROR,
                    details={
                        "chain": result.chain,
                        "first_bad": first_bad[:500],
                        "events_checked": result.events_checked,
                    },
                )
        if not result.ok:
            broken.append(result.chain)
    return broken
