"""Verifying the database against what is held outside it: every chain walked (events,
MACs, chain and tree hashes), then compared with its latest signed checkpoint. A chain
shorter than its checkpoint, or whose tree at that size has another root, fails, naming
the checkpoint it contradicts; so does a held checkpoint the log's key did not sign."""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings

from audit import note
from audit.chain import Break, ChainResult
from audit.verify import integration, verify_all
from auditor import proofs, witnesses
from auditor.archive import archive
from auditor.checkpoints import chains, open_held


@dataclass(frozen=True)
class Verified:
    """A chain's result, and the checkpoint it was compared with (if it has one)."""

    result: ChainResult
    checkpoint: note.Checkpoint | None


def verify_with_checkpoints(
    parallel: bool | None = None, only: Collection[str] | None = None
) -> list[Verified]:
    """Every chain's result (or those named by `only`), each checked against its
    checkpoint held outside the database (and its witnesses' cosignatures, when
    KEYWARD_AUDIT_WITNESS_QUORUM requires them)."""
    held, problems = _held(only)
    sizes = {chain: (cp.size,) for chain, cp in held.items()}
    results = verify_all(parallel, {**dict.fromkeys(problems, ()), **sizes}, only)
    return [
        Verified(_against(r, held.get(r.chain), problems.get(r.chain)), held.get(r.chain))
        for r in results
    ]


def verification_report(names: list[str], *, whole_log: bool) -> dict[str, Any]:
    """The chains named verified against their checkpoints (in this process), with the
    events not accounted for in them (in any chain when `whole_log`): the answer of
    GET /api/v1/audit/verify, which the console shows too."""
    verified = verify_with_checkpoints(parallel=False, only=names)
    results = [v.result for v in verified]
    chains = [_chain_report(v) for v in verified]
    first_bad = next((c["first_bad"] for c in chains if c["first_bad"]), None)
    report = integration(None if whole_log else names)
    return {
        "ok": first_bad is None and report.ok,
        "events_checked": sum(r.events_checked for r in results),
        "head": results[0].head if len(results) == 1 else None,
        "first_bad": first_bad,
        "chains": chains,
        "unaccounted": report.unaccounted,
        "rejected": report.rejected,
    }


def _chain_report(verified: Verified) -> dict[str, Any]:
    result, signed = verified.result, verified.checkpoint
    return {
        "chain": result.chain,
        "ok": result.ok,
        "events_checked": result.events_checked,
        "head": result.head,
        "first_bad": result.first_bad.describe() if result.first_bad else None,
        "checkpoint": None
        if signed is None
        else {"size": signed.size, "root": proofs.b64(signed.root), "described": describe(signed)},
    }


def _held(only: Collection[str] | None) -> tuple[dict[str, note.Checkpoint], dict[str, str]]:
    """Each chain's checkpoint held outside the database, opened with the log's key, and
    what is wrong with those that cannot be relied on."""
    where, quorum = archive(), settings.AUDIT_WITNESS_QUORUM
    held: dict[str, note.Checkpoint] = {}
    problems: dict[str, str] = {}
    for chain in chains():  # in the database or the archive: either may have lost one
        if only is not None and chain not in only:
            continue
        try:
            kept = where.latest(chain)
            if kept is None:
                continue
            held[chain] = open_held(chain, kept)
        except note.NoteError as exc:
            problems[chain] = f"its checkpoint held outside the database does not verify ({exc})"
            continue
        cosigners = witnesses.cosigned_by(kept.note)
        if len(cosigners) < quorum:
            problems[chain] = (
                f"{describe(held[chain])} carries {len(cosigners)} of the {quorum} witness "
                f"cosignatures required ({', '.join(cosigners) or 'none'})"
            )
    return held, problems


def describe(checkpoint: note.Checkpoint) -> str:
    root = base64.b64encode(checkpoint.root).decode()
    return f"the signed checkpoint of size {checkpoint.size}, root {root}"


def _against(
    result: ChainResult, checkpoint: note.Checkpoint | None, problem: str | None
) -> ChainResult:
    if not result.ok:
        return result  # the first bad event is already named
    if problem:
        return replace(result, first_bad=Break(result.chain, 0, "", problem))
    if checkpoint is None:
        return result
    if result.events_checked < checkpoint.size:
        reason = (
            f"it holds {result.events_checked} events, fewer than the {checkpoint.size} of "
            f"{describe(checkpoint)} (truncated, or an older copy restored)"
        )
    elif result.roots.get(checkpoint.size) != checkpoint.root:
        reason = (
            f"its first {checkpoint.size} events do not hash to the root of "
            f"{describe(checkpoint)} (rewritten, reordered or rolled back)"
        )
    else:
        return result
    return replace(result, first_bad=Break(result.chain, 0, "", reason))
