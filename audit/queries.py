"""Reads of the audit log and of its verification results."""

from __future__ import annotations

from datetime import datetime

from django.db.models import F, Max, Min, QuerySet

from audit.models import AuditEvent, AuditPending, ChainCheck


def events() -> QuerySet[AuditEvent]:
    """Every event, with its chain position when it has been integrated."""
    return AuditEvent.objects.select_related("link")


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
