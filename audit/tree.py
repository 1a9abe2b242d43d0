"""Each chain's Merkle tree as the database stores it: the links' leaf hashes and, at every
level that is a multiple of `STRIDE`, the complete subtrees (`AuditTreeNode`), in the manner
of C2SP tlog-tiles. A tree head, an inclusion proof or a consistency proof reads at most
2^STRIDE - 1 stored hashes per STRIDE levels, all in one statement."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from audit import merkle
from audit.models import AuditTreeNode
from core import sql

STRIDE = 4
WIDTH = 1 << STRIDE


def _runs(indices: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Sorted indices as inclusive (first, last) runs of consecutive numbers."""
    start = prev = indices[0]
    for i in indices[1:]:
        if i != prev + 1:
            yield start, prev
            start = i
        prev = i
    yield start, prev


# One range scan of the unique index per run of consecutive indices, joined by UNION ALL,
# so the plan never depends on the tables' statistics.
_LEAVES = "SELECT 0, seq - 1, leaf_hash FROM audit_link WHERE chain = %s AND seq BETWEEN %s AND %s"
_NODES = (
    "SELECT level, position, hash FROM audit_tree_node"
    " WHERE chain = %s AND level = %s AND position BETWEEN %s AND %s"
)


def fetch(chain: str, wanted: Mapping[int, Sequence[int]]) -> dict[int, dict[int, bytes]]:
    """The stored hashes of a chain's tree asked for (level: indices), by level and index,
    in one statement (missing ones left out). Level 0 is the links' leaf hashes."""
    parts: list[str] = []
    params: list[sql.Param] = []
    for level, indices in wanted.items():
        for first, last in _runs(indices) if indices else ():
            if level == 0:
                parts.append(_LEAVES)
                params += [chain, first + 1, last + 1]
            else:
                parts.append(_NODES)
                params += [chain, level, first, last]
    found: dict[int, dict[int, bytes]] = {level: {} for level in wanted}
    if parts:
        for level, position, digest in sql.fetch_raw(" UNION ALL ".join(parts), params):
            if digest:
                found[int(level)][int(position)] = bytes.fromhex(digest)
    return found


def reader(chain: str) -> merkle.HashReader:
    return merkle.strided_reader(lambda wanted: fetch(chain, wanted), STRIDE)


def head(chain: str, size: int) -> bytes:
    """The root of the chain's tree of its first `size` events."""
    return merkle.tree_hash(size, reader(chain))


def inclusion(chain: str, index: int, size: int) -> list[bytes]:
    return merkle.prove_inclusion(index, size, reader(chain))


def consistency(chain: str, old_size: int, new_size: int) -> list[bytes]:
    return merkle.prove_consistency(old_size, new_size, reader(chain))


def new_nodes(chain: str, old_size: int, new_size: int) -> list[AuditTreeNode]:
    """The stored subtrees completed by growing the chain from `old_size` to `new_size`
    leaves (every leaf already written). Each level is built from the one below it, which
    is read from the database unless it was completed in this same growth; a stored
    subtree found missing below is rebuilt from the leaves and stored again."""
    made: list[AuditTreeNode] = []
    below: Mapping[int, bytes] = {}
    level = STRIDE
    while (new_size >> level) > (old_size >> level):
        first, last = old_size >> level, new_size >> level
        children = _children(chain, level - STRIDE, range(first, last), below, made)
        hashes = {
            p: merkle.perfect_root([children[i] for i in range(p * WIDTH, (p + 1) * WIDTH)])
            for p in range(first, last)
        }
        made += [
            AuditTreeNode(chain=chain, level=level, position=p, hash=h.hex())
            for p, h in hashes.items()
        ]
        below, level = hashes, level + STRIDE
    return made


def _children(
    chain: str,
    level: int,
    parents: range,
    known: Mapping[int, bytes],
    made: list[AuditTreeNode],
) -> dict[int, bytes]:
    """The hashes at `level` under `parents` (the positions one stride up): known, stored,
    or, for a subtree that is missing, rebuilt from below (and added to `made`)."""
    wanted = range(parents.start * WIDTH, parents.stop * WIDTH)
    found = dict(known)
    found.update(fetch(chain, {level: [i for i in wanted if i not in known]})[level])
    missing = [i for i in wanted if i not in found]
    if missing and level == 0:
        raise merkle.ProofError(f"chain {chain}: no leaf {missing[0]}")
    for position in missing:
        grand = _children(chain, level - STRIDE, range(position, position + 1), {}, made)
        digest = merkle.perfect_root([grand[i] for i in sorted(grand)])
        made.append(AuditTreeNode(chain=chain, level=level, position=position, hash=digest.hex()))
        found[position] = digest
    return found
