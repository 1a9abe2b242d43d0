"""What an auditor is given to check the log as a Certificate Transparency log is checked:
each chain's latest signed checkpoint, an event's inclusion proof, and consistency proofs
between tree sizes, all against the tree the database stores (the checkpoint is the one
held outside it)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from audit import merkle, note, tree
from audit.models import AuditLink
from auditor import witnesses
from auditor.archive import archive
from auditor.checkpoints import chain_size, open_held
from core.errors import Conflict, InvalidInput
from core.numbers import decimal


class CheckpointUnverified(Conflict):
    code = "checkpoint_unverified"
    message = "The chain's checkpoint held outside the database does not verify; run audit_verify."


class NotYetSigned(Conflict):
    code = "not_yet_signed"
    message = "No signed checkpoint covers this yet; ask for a size, or retry after the next."


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Signed:
    """A chain's latest checkpoint as held outside the database, opened with the log key."""

    chain: str
    checkpoint: note.Checkpoint
    note: str

    def as_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "origin": self.checkpoint.origin,
            "size": self.checkpoint.size,
            "root": b64(self.checkpoint.root),
            "note": self.note,
            "cosigned_by": witnesses.cosigned_by(self.note),
        }


def latest(chain: str) -> Signed | None:
    """The chain's latest checkpoint; NoteError when the one held does not verify."""
    held = archive().latest(chain)
    if held is None:
        return None
    return Signed(chain, open_held(chain, held), held.note)


def held_checkpoints(chains: list[str]) -> list[dict[str, Any]]:
    """The latest checkpoint of each chain named that has one (`as_json`), or what is
    wrong with one that does not verify."""
    found = []
    for chain in chains:
        try:
            signed = latest(chain)
        except note.NoteError as exc:
            problem = f"the held checkpoint does not verify ({exc})"
            found.append({"chain": chain, "problem": problem})
            continue
        if signed is not None:
            found.append(signed.as_json())
    return found


def _latest_verified(chain: str) -> Signed | None:
    try:
        return latest(chain)
    except note.NoteError as exc:
        raise CheckpointUnverified(f"{CheckpointUnverified.message} ({exc})") from None


def _size(raw: str | None, name: str, chain: str, signed: Signed | None, least: int) -> int:
    """A tree size from the query (an integer from `least` to the chain's size), or the
    latest checkpoint's size when none is given."""
    if raw is None:
        if signed is None or signed.checkpoint.size < least:
            raise NotYetSigned()
        return signed.checkpoint.size
    size, asked = chain_size(chain), decimal(raw)
    if asked is None or not least <= asked <= size:
        raise InvalidInput(fields={name: [f"An integer from {least} to {size}."]})
    return asked


def inclusion(link: AuditLink, raw_size: str | None) -> dict[str, Any]:
    """The inclusion proof of a linked event in its chain's tree of the size asked (by
    default, its latest checkpoint's), with that checkpoint when the sizes match."""
    signed = _latest_verified(link.chain)
    size = _size(raw_size, "size", link.chain, signed, link.seq)
    try:
        proof = tree.inclusion(link.chain, link.seq - 1, size)
    except merkle.ProofError as exc:
        raise Conflict(f"The stored tree cannot prove this: {exc}") from None
    answer = {
        "event_id": str(link.event_id),
        "chain": link.chain,
        "index": link.seq - 1,
        "size": size,
        "leaf_hash": b64(bytes.fromhex(link.leaf_hash)),
        "proof": [b64(h) for h in proof],
    }
    if signed is not None and signed.checkpoint.size == size:
        answer["checkpoint"] = signed.as_json()
    return answer


def consistency(chain: str, raw_old: str | None, raw_new: str | None) -> dict[str, Any]:
    """The consistency proof between two sizes of a chain's tree (`to` defaults to its
    latest checkpoint's size), with both roots."""
    signed = _latest_verified(chain)
    if raw_old is None:
        raise InvalidInput(fields={"from": ["Required: an integer tree size."]})
    new = _size(raw_new, "to", chain, signed, 1)
    old = _size(raw_old, "from", chain, signed, 1)
    if old > new:
        raise InvalidInput(fields={"from": [f"At most `to` ({new})."]})
    try:
        proof = tree.consistency(chain, old, new)
        roots = (tree.head(chain, old), tree.head(chain, new))
    except merkle.ProofError as exc:
        raise Conflict(f"The stored tree cannot prove this: {exc}") from None
    answer = {
        "chain": chain,
        "from": old,
        "to": new,
        "from_root": b64(roots[0]),
        "to_root": b64(roots[1]),
        "proof": [b64(h) for h in proof],
    }
    if signed is not None and signed.checkpoint.size == new:
        answer["checkpoint"] = signed.as_json()
    return answer
