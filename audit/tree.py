"""Each chain's Merkle tree as the database stores it: the links' leaf hashes and, at every
level that is a multiple of `STRIDE`, the complete subtrees (`AuditTreeNode`), in the manner
of C2SP tlog-tiles. A tree head, an inclusion proof or a consistency proof reads at most
2^(STRIDE-1) stored hashes per STRIDE levels, in one query per level read."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from django.db.models import Q

from audit import merkle
from audit.models import AuditLink, AuditTreeNode

STRIDE = 8
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


def fetch(chain: str, level: int, indices: Sequence[int]) -> dict[int, bytes]:
    """The stored hashes of one level of a chain's tree, by index (missing ones left out)."""
    if not indices:
        return {}
    if level == 0:
        runs = Q()
        for first, last in _runs(indices):
            runs |= Q(seq__range=(first + 1, last + 1))
        rows = AuditLink.objects.filter(runs, chain=chain).values_list("seq", "leaf_hash")
        return {seq - 1: bytes.fromhex(h) for seq, h in rows if h}
    runs = Q()
    for first, last in _runs(indices):
        runs |= Q(position__range=(first, last))
    nodes = AuditTreeNode.objects.filter(runs, chain=chain, level=level)
    return {p: bytes.fromhex(h) for p, h in nodes.values_list("position", "hash")}


def reader(chain: str) -> merkle.HashReader:
    return merkle.strided_reader(lambda level, wanted: fetch(chain, level, wanted), STRIDE)


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
    is read from the database unless it was completed in this same growth."""
    made: list[AuditTreeNode] = []
    below: Mapping[int, bytes] = {}
    level = STRIDE
    while (new_size >> level) > (old_size >> level):
        first, last = old_size >> level, new_size >> level
        wanted = range(first * WIDTH, last * WIDTH)
        known = dict(below)
        known.update(fetch(chain, level - STRIDE, [i for i in wanted if i not in below]))
        missing = [i for i in wanted if i not in known]
        if missing:
            raise merkle.ProofError(
                f"chain {chain}: no stored node {missing[0]} at level {level - STRIDE}"
            )
        hashes = {
            p: merkle.root([known[i] for i in range(p * WIDTH, (p + 1) * WIDTH)])
            for p in range(first, last)
        }
        made += [
            AuditTreeNode(chain=chain, level=level, position=p, hash=h.hex())
            for p, h in hashes.items()
        ]
        below, level = hashes, level + STRIDE
    return made
