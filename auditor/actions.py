"""State changes of the auditor side: chain-check results, exports and their checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction

from audit.actors import Actor
from audit.chain import ChainResult
from audit.models import ChainCheck, Checkpoint, Outcome
from audit.recorder import record
from notify.tasks import notify

# How a refusal of the checkpoint signer begins, in a chain's check: a verification that
# finds the chain's events intact does not clear it (the witness that refused may know of
# a rollback the database and the archive no longer show); the signer does, once it signs.
REFUSAL = "the signer refuses its checkpoint: "


def do_record_chain_check(result: ChainResult, *, actor: Actor, now: datetime) -> bool:
    """Keep a chain's latest verification result; record and notify `audit.chain_broken`
    when the chain turns bad (not again on every run while it stays bad). Returns whether
    this run found it newly broken."""
    first_bad = result.first_bad.describe()[:500] if result.first_bad else ""
    with transaction.atomic(durable=True):
        previous = ChainCheck.objects.select_for_update().filter(chain=result.chain).first()
        if result.ok and previous is not None and REFUSAL in previous.first_bad:
            return False
        newly_broken = not result.ok and (
            previous is None or previous.ok or previous.first_bad != first_bad
        )
        ChainCheck.objects.update_or_create(
            chain=result.chain,
            defaults={
                "ok": result.ok,
                "events_checked": result.events_checked,
                "head": result.head,
                "first_bad": first_bad,
                "checked_at": now,
            },
        )
        if newly_broken:
            notify("audit.chain_broken", {"chain": result.chain, "first_bad": first_bad})
            record(
                "audit.chain_broken",
                actor=actor,
                outcome=Outcome.ERROR,
                details={
                    "chain": result.chain,
                    "first_bad": first_bad,
                    "events_checked": result.events_checked,
                },
            )
    return newly_broken


def do_clear_refusal(chain: str, *, now: datetime) -> None:
    """The signer has signed the chain again: its earlier refusal no longer stands."""
    ChainCheck.objects.filter(chain=chain, first_bad__contains=REFUSAL).update(
        ok=True, first_bad="", checked_at=now
    )


def do_note_export(
    fmt: str, scope: dict[str, Any], *, actor: Actor, phase: str, **facts: Any
) -> None:
    """Audit an export: `started` before its first line is sent (a read of the log is
    recorded before anything leaves), then `exported` once its signed manifest has been
    sent, or `export_failed` when it stopped before (the file then ends without one)."""
    outcome = Outcome.ERROR if phase == "export_failed" else Outcome.SUCCESS
    with transaction.atomic(durable=True):
        record(
            f"audit.{phase}",
            actor=actor,
            outcome=outcome,
            details={"format": fmt, **scope, **facts},
        )


def do_save_checkpoint(manifest_sha256: str, count: int, chains: dict[str, Any]) -> Checkpoint:
    """Keep the digest of a signed manifest, so the next export can name its predecessor."""
    return Checkpoint.objects.create(manifest_sha256=manifest_sha256, count=count, chains=chains)
