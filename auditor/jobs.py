"""Periodic jobs of the audit log: verifying every chain against its signed checkpoint,
and signing each chain's new tree head."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone

from audit.actors import Actor
from audit.chain import Break, ChainResult
from audit.models import ChainCheck
from auditor.actions import REFUSAL, do_clear_refusal, do_record_chain_check
from auditor.archive import ArchiveConflict
from auditor.checkpoints import CheckpointRefused, Issued, chains, sign_chain
from auditor.verification import verify_with_checkpoints

VERIFIER = Actor.system("audit_verify")
SIGNER = Actor.system("audit_checkpoint")


def verify_chains() -> list[str]:
    """Verify every chain and keep each one's result; returns the broken chains."""
    now = timezone.now()
    broken = []
    for verified in verify_with_checkpoints():
        result = verified.result
        do_record_chain_check(result, actor=VERIFIER, now=now)
        if not result.ok:
            broken.append(result.chain)
    return broken


@dataclass
class Signing:
    """What one signing run did, chain by chain."""

    issued: list[Issued] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)  # another signer replaced it meanwhile


def sign_checkpoints() -> Signing:
    """Sign every chain that grew. A refusal marks the chain broken (recorded and notified
    once, as verification does) and signs nothing for it."""
    run, now = Signing(), timezone.now()
    refused_before = set(
        ChainCheck.objects.filter(first_bad__contains=REFUSAL).values_list("chain", flat=True)
    )
    for chain in chains():
        try:
            run.issued.append(sign_chain(chain))
        except ArchiveConflict:
            run.busy.append(chain)
        except CheckpointRefused as refusal:
            run.refused[chain] = refusal.reason
            reason = REFUSAL + refusal.reason
            broken = ChainResult(chain, 0, "", Break(chain, 0, "", reason))
            do_record_chain_check(broken, actor=SIGNER, now=now)
    for issued in run.issued:
        if issued.chain in refused_before:
            do_clear_refusal(issued.chain, now=now)
    return run
