"""RFC 6962 Merkle trees: the certificate-transparency reference vectors, and every proof
of every tree up to 33 leaves verified (and any change to one refused) by the RFC 9162
verification algorithms."""

from __future__ import annotations

import pytest

from audit import merkle

# The reference corpus of certificate-transparency's Merkle tree tests.
ENTRIES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243")] + [
    bytes.fromhex("5051525354555657"),
    bytes.fromhex("606162636465666768696a6b6c6d6e6f"),
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = {  # (leaf index, tree size): audit path
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CONSISTENCY = {  # (old size, new size): proof
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
LEAVES = [merkle.leaf_hash(e) for e in ENTRIES]


def hexes(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def test_the_roots_match_the_reference_vectors():
    assert [merkle.root(LEAVES[:n]).hex() for n in range(9)] == ROOTS


@pytest.mark.parametrize(("index", "size"), sorted(INCLUSION))
def test_inclusion_proofs_match_the_reference_vectors(index, size):
    proof = merkle.inclusion_proof(index, LEAVES[:size])
    assert hexes(proof) == INCLUSION[(index, size)]
    merkle.verify_inclusion(index, size, LEAVES[index], proof, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize(("old", "new"), sorted(CONSISTENCY))
def test_consistency_proofs_match_the_reference_vectors(old, new):
    proof = merkle.consistency_proof(old, LEAVES[:new])
    assert hexes(proof) == CONSISTENCY[(old, new)]
    merkle.verify_consistency(old, new, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]), proof)


def _altered(proof: list[bytes], i: int) -> list[bytes]:
    return [bytes([p[0] ^ 1]) + p[1:] if j == i else p for j, p in enumerate(proof)]


SIZES = range(1, 34)
MANY = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(max(SIZES))]


@pytest.mark.parametrize("size", SIZES)
def test_every_inclusion_proof_verifies_and_no_altered_one_does(size):
    leaves, top = MANY[:size], merkle.root(MANY[:size])
    for index in range(size):
        proof = merkle.inclusion_proof(index, leaves)
        merkle.verify_inclusion(index, size, leaves[index], proof, top)
        for i in range(len(proof)):
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(index, size, leaves[index], _altered(proof, i), top)
        with pytest.raises(merkle.ProofError):  # the same leaf claimed elsewhere
            merkle.verify_inclusion((index + 1) % size or size, size, leaves[index], proof, top)
        with pytest.raises(merkle.ProofError):  # a path cut short, or padded
            merkle.verify_inclusion(index, size, leaves[index], proof[:-1] or [top, top], top)


@pytest.mark.parametrize("size", SIZES)
def test_every_consistency_proof_verifies_and_no_altered_one_does(size):
    leaves, new_root = MANY[:size], merkle.root(MANY[:size])
    for old in range(1, size + 1):
        old_root = merkle.root(MANY[:old])
        proof = merkle.consistency_proof(old, leaves)
        merkle.verify_consistency(old, size, old_root, new_root, proof)
        for i in range(len(proof)):
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(old, size, old_root, new_root, _altered(proof, i))
        forked = merkle.root([*MANY[: old - 1], merkle.leaf_hash(b"forged")])
        with pytest.raises(merkle.ProofError):  # a rewritten history is not a prefix
            merkle.verify_consistency(old, size, forked, new_root, proof)


def test_impossible_positions_and_sizes_are_refused():
    with pytest.raises(merkle.ProofError):
        merkle.inclusion_proof(3, LEAVES[:3])
    with pytest.raises(merkle.ProofError):
        merkle.consistency_proof(0, LEAVES[:3])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(5, 4, LEAVES[0], LEAVES[0], [])
    with pytest.raises(merkle.ProofError):
        merkle.root_from_inclusion(0, 0, LEAVES[0], [])


def _strided(leaves: list[bytes], stride: int) -> merkle.HashReader:
    """A store that keeps only the leaves and the levels that are multiples of `stride`,
    filled from the list functions (the independent definition)."""
    levels: dict[int, dict[int, bytes]] = {0: dict(enumerate(leaves))}
    level = stride
    while (len(leaves) >> level) > 0:
        width = 1 << level
        levels[level] = {
            i: merkle.root(leaves[i * width : (i + 1) * width]) for i in range(len(leaves) >> level)
        }
        level += stride
    return merkle.strided_reader(
        lambda wanted: {
            base: {i: levels[base][i] for i in indices if i in levels[base]}
            for base, indices in wanted.items()
        },
        stride,
    )


@pytest.mark.parametrize("stride", [1, 2, 3, 8])
@pytest.mark.parametrize("size", SIZES)
def test_proofs_read_from_a_stored_tree_equal_the_definitions(size, stride):
    leaves = MANY[:size]
    for reader in (merkle.leaves_reader(leaves), _strided(leaves, stride)):
        assert merkle.tree_hash(size, reader) == merkle.root(leaves)
        for index in range(size):
            assert merkle.prove_inclusion(index, size, reader) == merkle.inclusion_proof(
                index, leaves
            )
        for old in range(1, size + 1):
            assert merkle.prove_consistency(old, size, reader) == merkle.consistency_proof(
                old, leaves
            )
    # A smaller tree of the same store: the sizes asked, not the store's, decide.
    reader = _strided(leaves, stride)
    for smaller in range(1, size):
        assert merkle.tree_hash(smaller, reader) == merkle.root(leaves[:smaller])


def test_a_stored_tree_missing_a_node_is_refused_not_guessed():
    reader = _strided(MANY[:9], 2)
    with pytest.raises(merkle.ProofError):
        merkle.tree_hash(10, reader)
    with pytest.raises(merkle.ProofError):
        merkle.prove_inclusion(9, 9, reader)
    assert merkle.tree_hash(0, reader) == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", SIZES)
def test_a_run_of_leaves_joined_to_its_prefix_gives_every_root(size):
    leaves = MANY[:size]
    for start in range(size + 1):
        parts = merkle._parts(0, start)
        hashes = [merkle.root(leaves[p << lv : (p + 1) << lv]) for lv, p in parts]
        prefix = merkle.Frontier.from_hashes(start, hashes)
        assert prefix.root() == merkle.root(leaves[:start])
        run = merkle.Frontier(start)
        for leaf in leaves[start:]:
            run.append(leaf)
            assert prefix.joined(run).root() == merkle.root(leaves[: run.size])
    with pytest.raises(merkle.ProofError):
        merkle.Frontier.from_hashes(3, [MANY[0]])  # 3 leaves are two complete subtrees
    with pytest.raises(merkle.ProofError):
        merkle.Frontier.from_hashes(2, [MANY[0]]).joined(merkle.Frontier(3))
    with pytest.raises(merkle.ProofError):
        merkle.Frontier(2).root()
