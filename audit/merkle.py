"""Merkle trees of RFC 6962 (Certificate Transparency), section 2.1, and the proof
verification of RFC 9162, section 2.1.3 and 2.1.4. Plain functions over leaf hashes, no
Django here: offline verifiers import this module alone.

A leaf hash is SHA-256(0x00 || entry) and an interior node SHA-256(0x01 || left || right),
so no entry can pass for a node. The tree of n leaves splits at k, the largest power of two
smaller than n: the left subtree is complete, the right holds the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


# A complete subtree: (level, index) covers the leaves [index << level, (index + 1) << level).
Node = tuple[int, int]
# Gives the hashes of complete subtrees, in the order asked: how a stored tree is read.
HashReader = Callable[[Sequence[Node]], Sequence[bytes]]
# Gives the stored hashes asked for, level by level and by index, in one read; a missing
# index is simply left out.
LevelFetch = Callable[[Mapping[int, Sequence[int]]], Mapping[int, Mapping[int, bytes]]]


class ProofError(ValueError):
    """A proof that does not prove what it claims, or sizes no proof can relate."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class Frontier:
    """A run of leaves [start, size) grown one leaf at a time, holding only the roots of
    its maximal complete subtrees (O(log n) of them), as a compact range does. From
    `start` 0 it gives the tree's root at any size in one pass over the leaves; a run that
    starts later is joined to the frontier of its prefix (`joined`)."""

    def __init__(self, start: int = 0) -> None:
        self.start = self.size = start
        self._stack: list[tuple[int, int, bytes]] = []  # (level, position, hash), left first

    @classmethod
    def of(cls, size: int, reader: HashReader) -> Frontier:
        """The frontier of a stored tree at `size`, its complete subtrees read in one call."""
        parts = _parts(0, size)
        return cls.from_hashes(size, reader(parts) if parts else [])

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> Frontier:
        """The frontier at `size` given its complete subtrees' hashes, largest first."""
        parts = _parts(0, size)
        if len(hashes) != len(parts) or any(len(h) != 32 for h in hashes):
            raise ProofError(f"a tree of {size} leaves has {len(parts)} complete subtrees")
        frontier = cls()
        frontier._stack = [(lv, pos, h) for (lv, pos), h in zip(parts, hashes, strict=True)]
        frontier.size = size
        return frontier

    def hashes(self) -> list[bytes]:
        return [digest for _, _, digest in self._stack]

    def copy(self) -> Frontier:
        out = Frontier(self.start)
        out._stack, out.size = list(self._stack), self.size
        return out

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add the next leaf; returns the subtrees it completes as (level, position, hash)."""
        self.size += 1
        return self._add(0, self.size - 1, leaf)

    def _add(self, level: int, position: int, digest: bytes) -> list[tuple[int, int, bytes]]:
        completed = []
        # A right child merges with the left sibling on top of the stack, if the run has it.
        while position & 1 and self._stack and self._stack[-1][:2] == (level, position - 1):
            digest = node_hash(self._stack.pop()[2], digest)
            level, position = level + 1, position >> 1
            completed.append((level, position, digest))
        self._stack.append((level, position, digest))
        return completed

    def joined(self, right: Frontier) -> Frontier:
        """This frontier of [start, n) followed by `right`, a run of [n, m)."""
        if right.start != self.size:
            raise ProofError(f"a run from {right.start} does not follow one ending at {self.size}")
        out = self.copy()
        out.size = right.size
        for level, position, digest in right._stack:
            out._add(level, position, digest)
        return out

    def root(self) -> bytes:
        """The root of the tree of [0, size) (only a run from 0 has one)."""
        if self.start != 0:
            raise ProofError("only a run from the first leaf has a root")
        if not self._stack:
            return EMPTY_ROOT
        digest = self._stack[-1][2]
        for _, _, left in reversed(self._stack[:-1]):
            digest = node_hash(left, digest)
        return digest


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the leaf hashes `leaves`."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf `index` in the tree of `leaves`."""
    if not 0 <= index < len(leaves):
        raise ProofError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]): that the tree of the first `old_size` leaves is a prefix of this one."""
    if not 0 < old_size <= len(leaves):
        raise ProofError(f"no consistency proof from {old_size} to {len(leaves)}")
    return _subproof(old_size, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), root(leaves[:k])]


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` makes of `leaf` at `index` in a tree of `size` (RFC 9162
    2.1.3.2); ProofError when the proof has the wrong length for that position."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """ProofError unless `proof` puts `leaf` at `index` of the tree of `size` with this root."""
    if root_from_inclusion(index, size, leaf, proof) != expected_root:
        raise ProofError("the inclusion proof leads to another root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """ProofError unless `proof` shows the tree of `old_size` with `old_root` to be a prefix
    of the tree of `new_size` with `new_root` (RFC 9162 2.1.4.2)."""
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency from {old_size} to {new_size}")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise ProofError("equal sizes need an empty proof and equal roots")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        raise ProofError("the consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != old_root or sr != new_root:
        raise ProofError("the consistency proof leads to other roots")


# Proofs over a stored tree. The ranges each proof needs are listed first, so that every
# hash is read in one call of the reader; each range [lo, hi) is a subtree of the RFC 6962
# recursion, so `lo` is aligned to the largest power of two in its size.


def _parts(lo: int, hi: int) -> list[Node]:
    """[lo, hi) as complete subtrees, largest first."""
    parts = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        parts.append((level, lo >> level))
        lo += 1 << level
    return parts


def _range_hash(lo: int, hi: int, hashes: Mapping[Node, bytes]) -> bytes:
    """MTH(D[lo:hi]): its complete subtrees hashed together from the right."""
    parts = _parts(lo, hi)
    result = hashes[parts[-1]]
    for part in reversed(parts[:-1]):
        result = node_hash(hashes[part], result)
    return result


def _resolve(ranges: Sequence[tuple[int, int]], reader: HashReader) -> list[bytes]:
    nodes = sorted({part for lo, hi in ranges for part in _parts(lo, hi)})
    hashes = dict(zip(nodes, reader(nodes), strict=True))
    return [_range_hash(lo, hi, hashes) for lo, hi in ranges]


def _path_ranges(index: int, lo: int, hi: int) -> list[tuple[int, int]]:
    if hi - lo == 1:
        return []
    mid = lo + _split(hi - lo)
    if index < mid:
        return [*_path_ranges(index, lo, mid), (mid, hi)]
    return [*_path_ranges(index, mid, hi), (lo, mid)]


def _proof_ranges(old: int, lo: int, hi: int, *, complete: bool) -> list[tuple[int, int]]:
    if old == hi:
        return [] if complete else [(lo, hi)]
    mid = lo + _split(hi - lo)
    if old <= mid:
        return [*_proof_ranges(old, lo, mid, complete=complete), (mid, hi)]
    return [*_proof_ranges(old, mid, hi, complete=False), (lo, mid)]


def tree_hash(size: int, reader: HashReader) -> bytes:
    """MTH of the first `size` leaves of a stored tree."""
    return _resolve([(0, size)], reader)[0] if size else EMPTY_ROOT


def prove_inclusion(index: int, size: int, reader: HashReader) -> list[bytes]:
    """PATH(index, D[size]) of a stored tree."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    return _reached(size, _path_ranges(index, 0, size), reader)


def prove_consistency(old_size: int, new_size: int, reader: HashReader) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of a stored tree."""
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from {old_size} to {new_size}")
    return _reached(new_size, _proof_ranges(old_size, 0, new_size, complete=True), reader)


def _reached(size: int, ranges: list[tuple[int, int]], reader: HashReader) -> list[bytes]:
    """The hashes of `ranges`, read with the tree's last leaf: a store proves nothing about
    a size it has not reached, and a proof may not need that leaf."""
    return _resolve([*ranges, (size - 1, size)], reader)[:-1]


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root of a complete subtree (a power of two of hashes), level by level."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def leaves_reader(leaves: Sequence[bytes]) -> HashReader:
    """A reader over leaf hashes held in memory."""
    return lambda nodes: [root(leaves[i << level : (i + 1) << level]) for level, i in nodes]


def strided_reader(fetch: LevelFetch, stride: int) -> HashReader:
    """A reader over a store that keeps the leaves and every complete subtree whose level
    is a multiple of `stride`: any other node is hashed from the stored ones below it, at
    most 2^(stride - 1) of them."""

    def span(node: Node) -> tuple[int, range]:
        level, index = node
        base = level - level % stride
        width = 1 << (level - base)
        return base, range(index * width, (index + 1) * width)

    def read(nodes: Sequence[Node]) -> list[bytes]:
        wanted: dict[int, set[int]] = {}
        for node in nodes:
            base, indices = span(node)
            wanted.setdefault(base, set()).update(indices)
        stored = fetch({base: sorted(indices) for base, indices in wanted.items()})
        result = []
        for node in nodes:
            base, indices = span(node)
            level = stored.get(base, {})
            missing = [i for i in indices if i not in level]
            if missing:
                raise ProofError(f"the stored tree has no node {missing[0]} at level {base}")
            result.append(perfect_root([level[i] for i in indices]))
        return result

    return read
