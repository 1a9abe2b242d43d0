"""Reads of the audit log and of its verification results."""

from __future__ import annotations

from datetime import datetime

from django.db.models import F, Max, Min, QuerySet

from audit.models import AuditEvent, AuditPending, ChainCheck


def events() -> QuerySet[AuditEvent]:
    """Every event, with its chain position when it has been integrated."""
    return AuditEvent.objects.select_related("link")


def events_of_tenants(slugs: list[str] | None) -> QuerySet[AuditEvent]:
    """Every event of the tenants named (events of no tenant only when `slugs` is None,
    which stands for every tenant)."""
    found = events()
    return found if slugs is None else found.filter(tenant__in=slugs)


def chain_checks(chains: list[str] | None) -> QuerySet[ChainCheck]:
    """The latest verification of each chain named (every chain when None)."""
    checks = ChainCheck.objects.order_by("chain")
    return checks if chains is None else checks.filter(chain__in=chains)


def integrated_events() -> QuerySet[AuditEvent]:
    """Events in a chain, with `seq`, `prev_hash` and `hash` from their link."""
    return AuditEvent.objects.filter(link__isnull=False).annotate(
        seq=F("link__seq"), prev_hash=F("link__prev_hash"), hash=F("link__hash")
    )


def pending_summary() -> tuple[int, datetime | None]:
    """How many events wait for the sequencer, and when the oldest of them was written."""
    waiting = AuditEvent.objects.filter(id__in=AuditPending.objects.values("event_id"))
    return waiting.count(), waiting.aggregate(oldest=Min("occurred_at"))["oldest"]


def verification_summary() -> tuple[int, datetime | None]:
    """How many chains failed their last verification, and when the last one ran."""
    checks = ChainCheck.objects.all()
    return checks.filter(ok=False).count(), checks.aggregate(last=Max("checked_at"))["last"]
