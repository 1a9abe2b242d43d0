"""Periodic verification of every audit chain."""

from __future__ import annotations

from django.utils import timezone

from audit.actors import Actor
from audit.verify import verify_all
from auditor.actions import do_record_chain_check

VERIFIER = Actor.system("audit_verify")


def verify_chains() -> list[str]:
    """Verify every chain and keep each one's result; returns the broken chains."""
    now = timezone.now()
    broken = []
    for result in verify_all():
        do_record_chain_check(result, actor=VERIFIER, now=now)
        if not result.ok:
            broken.append(result.chain)
    return broken
