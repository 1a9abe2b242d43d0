"""Verifying the database against what is held outside it: every chain walked (events,
MACs, chain and tree hashes), then compared with its latest signed checkpoint. A chain
shorter than its checkpoint, or whose tree at that size has another root, fails, naming
the checkpoint it contradicts; so does a held checkpoint the log's key did not sign."""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass, replace

from django.conf import settings

from audit import note
from audit.chain import Break, ChainResult
from audit.verify import verify_all
from auditor import witnesses
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
