"""Canonical serialisation and hashing of audit events (no Django here: offline verifiers
import this module alone).

Domain separation follows RFC 6962: an event's leaf hash is SHA-256(0x00 || content) and
its chain hash is SHA-256(0x01 || previous chain hash || leaf hash), so no event content can
be mistaken for a link and no link for content. The same leaf hashes are the leaves of the
chain's Merkle tree (`audit.merkle`): the linear chain names the first bad event in one
walk, the tree gives signed checkpoints and logarithmic proofs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from audit.merkle import EMPTY_ROOT, Frontier, leaf_hash, node_hash

FORMAT_VERSION = 1
GENESIS = "0" * 64

HASHED_FIELDS = (
    "id",
    "chain",
    "seq",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "tenant",
    "target",
    "outcome",
    "request_id",
    "source_ip",
    "details",
)


def canonical_time(moment: datetime) -> str:
    """UTC, microsecond precision, always the same spelling."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# What an event's MAC covers: everything hashed except its position, which the sequencer
# assigns after the event is written.
MAC_FIELDS = tuple(name for name in HASHED_FIELDS if name != "seq")


def canonical_bytes(fields: Mapping[str, Any], names: tuple[str, ...] = HASHED_FIELDS) -> bytes:
    """The event's hashed content: sorted keys, no whitespace, ASCII only."""
    content = {name: fields[name] for name in names}
    content["v"] = FORMAT_VERSION
    if isinstance(content["occurred_at"], datetime):
        content["occurred_at"] = canonical_time(content["occurred_at"])
    content["id"] = str(content["id"])
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def event_mac(key: bytes, fields: Mapping[str, Any]) -> str:
    """HMAC-SHA256 of the event's content under the deployment's event-MAC key: a row
    written with only the database's credentials cannot carry a valid one."""
    return hmac.new(key, canonical_bytes(fields, MAC_FIELDS), hashlib.sha256).hexdigest()


def mac_ok(key: bytes, fields: Mapping[str, Any]) -> bool:
    return hmac.compare_digest(event_mac(key, fields), str(fields.get("mac") or ""))


def chain_hash(prev_hash: str, leaf: bytes) -> str:
    """The linear chain's next hash: the previous one and the event's Merkle leaf hash."""
    return node_hash(bytes.fromhex(prev_hash), leaf).hex()


def link_hash(prev_hash: str, content: bytes) -> str:
    return chain_hash(prev_hash, leaf_hash(content))


@dataclass(frozen=True)
class Break:
    """The first event at which a chain stops verifying, and why."""

    chain: str
    seq: int
    event_id: str
    reason: str

    def describe(self) -> str:
        if not self.event_id:  # the chain as a whole contradicts its checkpoint
            return f"chain {self.chain}: {self.reason}"
        return f"chain {self.chain}: event {self.event_id} (seq {self.seq}): {self.reason}"


@dataclass(frozen=True)
class ChainResult:
    chain: str
    events_checked: int
    head: str
    first_bad: Break | None
    # The Merkle tree's root at each size asked for that the chain reached intact.
    roots: Mapping[int, bytes] = field(default_factory=dict)
    # The tree's root after the last event that verified.
    root: bytes = EMPTY_ROOT

    @property
    def ok(self) -> bool:
        return self.first_bad is None


def verify_events(
    chain: str,
    events: Iterable[Mapping[str, Any]],
    mac_key: bytes | None = None,
    *,
    roots_at: Collection[int] = (),
    stored_nodes: Mapping[tuple[int, int], str] | None = None,
    after: tuple[int, str, Frontier] | None = None,
) -> ChainResult:
    """Walk one chain's events in `seq` order and report the first that does not fit.
    With the event-MAC key (online verification), each event's MAC is checked too; with
    the chain's stored Merkle subtrees, each is checked against the events it covers.
    `after` starts the walk past a verified prefix: its size, chain hash and tree."""
    size, head, frontier = after or (0, GENESIS, Frontier())
    expected_seq, checked = size + 1, 0
    roots: dict[int, bytes] = {}
    for event in events:
        leaf = leaf_hash(canonical_bytes(event)) if event.get("chain") == chain else b""
        problem = _problem(event, expected_seq, head, chain, leaf)
        if problem is None and mac_key is not None and not mac_ok(mac_key, event):
            problem = "its MAC does not verify (written without the event key)"
        if problem is None:
            problem = _stored_problem(frontier.append(leaf), stored_nodes)
        if problem:
            bad = Break(chain, int(event["seq"]), str(event["id"]), problem)
            return ChainResult(chain, checked, head, bad, roots, frontier.root())
        head, expected_seq, checked = event["hash"], expected_seq + 1, checked + 1
        if frontier.size in roots_at:
            roots[frontier.size] = frontier.root()
    return ChainResult(chain, checked, head, None, roots, frontier.root())


def _stored_problem(
    completed: list[tuple[int, int, bytes]], stored: Mapping[tuple[int, int], str] | None
) -> str | None:
    for level, position, digest in completed if stored else ():
        kept = stored.get((level, position))  # type: ignore[union-attr]
        if kept is not None and kept != digest.hex():
            return (
                f"the stored Merkle subtree (level {level}, position {position}) ending here "
                "does not match the events it covers"
            )
    return None


def _problem(
    event: Mapping[str, Any], expected_seq: int, head: str, chain: str, leaf: bytes
) -> str | None:
    if event.get("chain") is None:
        return "the event behind this position is missing (deleted)"
    if event.get("chain") != chain:
        return f"the event belongs to chain {event.get('chain')} (moved)"
    seq = int(event["seq"])
    if seq != expected_seq:
        return f"sequence {seq} where {expected_seq} was expected (an event is missing or moved)"
    if event["prev_hash"] != head:
        return "prev_hash does not match the previous event's hash (reordered or inserted)"
    if chain_hash(head, leaf) != event["hash"]:
        return "content does not match its hash (the event was altered)"
    if event.get("leaf_hash", leaf.hex()) != leaf.hex():
        return "its Merkle leaf hash does not match its content"
    return None
