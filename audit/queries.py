"""Reads of the audit log and of its verification results."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Max, QuerySet

from audit.models import AuditEvent, ChainCheck


def events() -> QuerySet[AuditEvent]:
    return AuditEvent.objects.all()


def verification_summary() -> tuple[int, datetime | None]:
    """How many chains failed their last verification, and when the last one ran."""
    checks = ChainCheck.objects.all()
    return checks.filter(ok=False).count(), checks.aggregate(last=Max("checked_at"))["last"]
