"""Each chain's Merkle tree as the sequencer stores it: heads and proofs read from the
database equal the RFC 6962 definitions over the events' own content, whatever the batches
were, in a bounded number of queries; stored subtrees and leaves are checked by
verification; the migration builds the tree of an existing log. PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module

import pytest
from django.apps import apps
from django.db import connection, transaction

from audit import merkle, tree
from audit.actors import Actor
from audit.chain import HASHED_FIELDS, canonical_bytes
from audit.models import AuditLink, AuditTreeNode
from audit.queries import integrated_events
from audit.recorder import chain_for, record
from audit.sequencer import integrate, integrate_all
from audit.verify import verify_chain
from tests import pg
from tests.audit.tamper import tamper
from tests.factories import rand

MIGRATION = import_module("audit.migrations.0006_merkle_tree")


def _write(tenants: list[str], count: int) -> None:
    with transaction.atomic():
        for n in range(count):
            record("test.tree", actor=Actor.system(), tenant=tenants[n % len(tenants)])


def _leaves(chain: str) -> list[bytes]:
    """The chain's leaves computed from its events alone, as an auditor would."""
    rows = integrated_events().filter(chain=chain).order_by("link__seq").values(*HASHED_FIELDS)
    return [merkle.leaf_hash(canonical_bytes(row)) for row in rows]


@pytest.fixture
def grown(db):
    """A chain of 600 events grown in uneven batches, interleaved with another chain."""
    tenants = [rand("tree"), rand("beside")]
    _write(tenants, 700)
    while integrate(limit=37).integrated:
        pass
    _write(tenants[:1], 250)
    integrate_all()
    chain = chain_for(tenants[0])
    assert AuditLink.objects.filter(chain=chain).count() == 600
    return chain


SIZES = [1, 2, 255, 256, 257, 511, 512, 513, 600]


def test_heads_equal_the_definition_at_every_size(grown, django_assert_num_queries):
    leaves = _leaves(grown)
    for size in SIZES:
        with django_assert_num_queries(1):  # every stored level it needs, at once
            assert tree.head(grown, size) == merkle.root(leaves[:size])


def test_inclusion_proofs_equal_the_definition_and_verify(grown, django_assert_num_queries):
    leaves = _leaves(grown)
    for size in SIZES:
        top = merkle.root(leaves[:size])
        for index in {0, size // 3, size - 1}:
            with django_assert_num_queries(1):
                proof = tree.inclusion(grown, index, size)
            assert proof == merkle.inclusion_proof(index, leaves[:size])
            merkle.verify_inclusion(index, size, leaves[index], proof, top)


def test_consistency_proofs_equal_the_definition_and_verify(grown, django_assert_num_queries):
    leaves = _leaves(grown)
    for old in SIZES:
        for new in (s for s in SIZES if s >= old):
            with django_assert_num_queries(1):
                proof = tree.consistency(grown, old, new)
            assert proof == merkle.consistency_proof(old, leaves[:new])
            merkle.verify_consistency(
                old, new, merkle.root(leaves[:old]), merkle.root(leaves[:new]), proof
            )


def test_the_sequencer_stores_each_complete_subtree_once(grown):
    nodes = AuditTreeNode.objects.filter(chain=grown).values_list("level", "position", "hash")
    leaves = _leaves(grown)
    assert sorted(nodes) == [
        (level, p, merkle.root(leaves[p << level : (p + 1) << level]).hex())
        for level in (4, 8)  # every fourth level: 37 subtrees of 16 leaves, 2 of 256
        for p in range(600 >> level)
    ]


def test_sizes_past_the_chain_get_no_head_or_proof(grown):
    with pytest.raises(merkle.ProofError):
        tree.head(grown, 601)
    with pytest.raises(merkle.ProofError):
        tree.inclusion(grown, 600, 601)
    with pytest.raises(merkle.ProofError):
        tree.consistency(grown, 10, 601)


@pytest.fixture
def chain_of_300(committed_db):
    tenant = rand("treetamper")
    _write([tenant], 300)
    integrate_all()
    chain = chain_for(tenant)
    assert verify_chain(chain).ok
    return chain


def test_a_rewritten_stored_subtree_is_named(chain_of_300):
    node = AuditTreeNode.objects.get(chain=chain_of_300, level=8)
    tamper(["UPDATE audit_tree_node SET hash = %s WHERE id = %s"], ["ab" * 32, node.pk])
    result = verify_chain(chain_of_300)
    assert result.first_bad is not None and result.first_bad.seq == 256
    assert "stored Merkle subtree (level 8, position 0)" in result.first_bad.reason


def test_a_rewritten_leaf_hash_is_named(chain_of_300):
    link = AuditLink.objects.get(chain=chain_of_300, seq=17)
    tamper(["UPDATE audit_link SET leaf_hash = %s WHERE event_id = %s"], ["cd" * 32, link.pk])
    result = verify_chain(chain_of_300)
    assert result.first_bad is not None and result.first_bad.event_id == str(link.pk)
    assert "Merkle leaf hash does not match" in result.first_bad.reason


@contextmanager
def _as_migration_owner() -> Iterator[None]:
    """Migrations run as the owner of the tables, not as the application's role."""
    user = connection.settings_dict["USER"]
    if connection.vendor == "postgresql":
        connection.close()
        connection.settings_dict["USER"] = pg.OWNER_ROLE
    try:
        yield
    finally:
        if connection.vendor == "postgresql":
            connection.close()
            connection.settings_dict["USER"] = user


def test_the_migration_builds_the_tree_of_an_existing_log(chain_of_300):
    before = sorted(AuditTreeNode.objects.filter(chain=chain_of_300).values_list("hash"))
    leaves = list(AuditLink.objects.filter(chain=chain_of_300).values_list("seq", "leaf_hash"))
    # The log as it was before the migration: no leaf hashes, no subtrees.
    tamper(
        [
            "UPDATE audit_link SET leaf_hash = ''",
            "DELETE FROM audit_tree_node",
        ]
    )
    with _as_migration_owner(), connection.schema_editor() as editor:
        MIGRATION.backfill(apps, editor)
        if connection.vendor == "sqlite":  # the backfill dropped audit_link's trigger there
            MIGRATION.install_triggers(apps, editor)
    after = AuditLink.objects.filter(chain=chain_of_300).values_list("seq", "leaf_hash")
    assert sorted(after) == sorted(leaves)
    assert sorted(AuditTreeNode.objects.filter(chain=chain_of_300).values_list("hash")) == before
    assert verify_chain(chain_of_300).ok
