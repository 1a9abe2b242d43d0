"""Signed checkpoints of the chains' Merkle trees, kept outside the database (security.md
rule 10): the note opens with a verifier written here from c2sp.org/signed-note and
tlog-checkpoint alone; each tamper case, done as the database's owner, is refused by the
signer and named by `audit_verify` with the checkpoint it contradicts. Under the local
store (a directory), the vault store (Vault KV and Transit) and the local store with an
S3-compatible bucket, on both databases."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.core.management import CommandError, call_command
from django.db import transaction

from audit import merkle, note, tree
from audit.actors import Actor
from audit.chain import GENESIS, HASHED_FIELDS, canonical_bytes, chain_hash
from audit.models import AuditEvent, AuditLink, AuditTreeNode
from audit.queries import integrated_events
from audit.recorder import chain_for, record
from audit.sequencer import integrate_all
from auditor import checkpoints, jobs
from auditor.archive import PREFIX, ArchiveConflict, Held, StoreArchive, archive
from tests.audit.tamper import tamper, tamper_each
from tests.factories import rand


@pytest.fixture(params=["local", "vault", "s3"])
def log(request, settings, committed_db):
    """A chain of 300 events with a signed checkpoint; returns the chain's name."""
    if request.param == "s3":
        settings.AUDIT_CHECKPOINT_S3 = request.getfixturevalue("s3").location()
        settings.AUDIT_CHECKPOINT_DIR = ""
    if request.param == "vault":
        bao = request.getfixturevalue("bao")
        if "transit/" not in bao.client().sys.list_mounted_secrets_engines()["data"]:
            bao.client().sys.enable_secrets_engine("transit")
        prefix = "checkpoint-tests-" + os.urandom(4).hex()
        settings.SECRET_STORES = {"default": bao.store_config(path_prefix=prefix)}
        settings.AUDIT_CHECKPOINT_DIR = ""
    tenant = rand("cp")
    _write(tenant, 300)
    chain = chain_for(tenant)
    run = jobs.sign_checkpoints()
    assert not run.refused
    return chain


def _write(tenant: str, count: int) -> None:
    with transaction.atomic():
        for n in range(count):
            record("test.checkpoint", actor=Actor.system(), tenant=tenant, details={"n": n})
    integrate_all()


def _leaves(chain: str) -> list[bytes]:
    rows = integrated_events().filter(chain=chain).order_by("link__seq").values(*HASHED_FIELDS)
    return [merkle.leaf_hash(canonical_bytes(row)) for row in rows]


def _open_by_the_specification(text: str, vkey: str) -> list[str]:
    """A signed note opened from c2sp.org/signed-note alone: the body's lines, once the
    signature of the key `vkey` (name+id+base64(0x01 || key)) verifies over the body."""
    name, key_hex, material = vkey.split("+", 2)
    raw = base64.b64decode(material)
    assert raw[0] == 0x01 and len(raw) == 33
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_id.hex() == key_hex
    body, _, signatures = text.rpartition("\n\n")
    for line in signatures.splitlines():
        signer, _, blob = line.removeprefix("\u2014 ").partition(" ")
        decoded = base64.b64decode(blob)
        if signer == name and decoded[:4] == key_id:
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(decoded[4:], (body + "\n").encode())
            return body.split("\n")
    raise AssertionError("no signature of the log's key")


def _note(chain: str) -> Held:
    held = archive().latest(chain)
    assert held is not None
    return held


def _held(chain: str) -> note.Checkpoint:
    return checkpoints.open_held(chain, _note(chain))


def _refused_and_named(chain: str, *phrases: str) -> None:
    """The signer refuses the chain, and audit_verify fails naming what it contradicts."""
    before = archive().latest(chain)
    run = jobs.sign_checkpoints()
    assert chain in run.refused, run
    assert archive().latest(chain) == before, "a refused chain got a new checkpoint"
    with pytest.raises(CommandError) as failure:
        call_command("audit_verify")
    assert failure.value.returncode == 1
    message = str(failure.value)
    assert chain in message
    for phrase in phrases:
        assert phrase in message or phrase in run.refused[chain], (phrase, message)


def test_a_checkpoint_signs_the_tree_of_the_events(log, settings):
    held = archive().latest(log)
    assert held is not None
    lines = _open_by_the_specification(held.note, str(checkpoints.verifier()))
    assert lines == [
        f"{settings.AUDIT_ORIGIN}/{log}",
        "300",
        base64.b64encode(merkle.root(_leaves(log))).decode(),
    ]
    call_command("audit_verify")


def test_an_unchanged_chain_is_not_signed_again_and_growth_is_consistent(log):
    first = _note(log)
    again = jobs.sign_checkpoints()
    assert [i.new for i in again.issued if i.chain == log] == [False]
    assert archive().latest(log) == first
    _write(log.removeprefix("tenant:"), 100)
    call_command("audit_checkpoint")
    old, new = checkpoints.open_held(log, first), _held(log)
    assert (old.size, new.size) == (300, 400)
    proof = tree.consistency(log, 300, 400)
    merkle.verify_consistency(300, 400, old.root, new.root, proof)


def test_a_cut_off_tail_is_named(log):
    tamper(
        [
            "DELETE FROM audit_event WHERE id IN"
            " (SELECT event_id FROM audit_link WHERE chain = %s AND seq > 297)",
            "DELETE FROM audit_link WHERE chain = %s AND seq > 297",
        ],
        [log],
    )
    _refused_and_named(log, "297 events, fewer than the 300", "signed checkpoint of size 300")


def test_a_chain_truncated_and_restarted_is_named(log):
    tamper(
        [
            "DELETE FROM audit_event WHERE chain = %s",
            "DELETE FROM audit_link WHERE chain = %s",
            "DELETE FROM audit_tree_node WHERE chain = %s",
        ],
        [log],
    )
    _write(log.removeprefix("tenant:"), 320)
    _refused_and_named(log, "do not hash to the root of the signed checkpoint of size 300")


def test_two_events_reordered_with_every_hash_recomputed_are_named(log):
    """What an owner of the database can do without the event key: MACs do not cover an
    event's position, so swapping two and recomputing every hash leaves a chain that walks
    clean. Only the checkpoint held outside shows it."""
    a = AuditLink.objects.get(chain=log, seq=5).pk
    b = AuditLink.objects.get(chain=log, seq=6).pk
    tamper_each(
        [
            ("UPDATE audit_link SET seq = 1000000 WHERE event_id = %s", [a]),
            ("UPDATE audit_link SET seq = 5 WHERE event_id = %s", [b]),
            ("UPDATE audit_link SET seq = 6 WHERE event_id = %s", [a]),
        ]
    )
    _rehash(log)
    assert tree.head(log, 300) == merkle.root(_leaves(log)), "the forgery is self-consistent"
    _refused_and_named(log, "do not hash to the root of the signed checkpoint of size 300")


def _rehash(chain: str) -> None:
    """Recompute every chain hash, leaf and stored subtree from the events, as a forger."""
    rows = integrated_events().filter(chain=chain).order_by("link__seq").values(*HASHED_FIELDS)
    # Out of the way first: (chain, prev_hash) is unique at every step.
    steps: list[tuple[str, list[object]]] = [
        ("UPDATE audit_link SET prev_hash = 'was-' || event_id WHERE chain = %s", [chain])
    ]
    prev, leaves = GENESIS, []
    for row in rows:
        leaf = merkle.leaf_hash(canonical_bytes(row))
        digest = chain_hash(prev, leaf)
        steps.append(
            (
                "UPDATE audit_link SET prev_hash = %s, hash = %s, leaf_hash = %s"
                " WHERE event_id = %s",
                [prev, digest, leaf.hex(), row["id"]],
            )
        )
        prev = digest
        leaves.append(leaf)
    level = tree.STRIDE
    while len(leaves) >> level:
        width = 1 << level
        for position in range(len(leaves) >> level):
            top = merkle.root(leaves[position * width : (position + 1) * width])
            steps.append(
                (
                    "UPDATE audit_tree_node SET hash = %s"
                    " WHERE chain = %s AND level = %s AND position = %s",
                    [top.hex(), chain, level, position],
                )
            )
        level += tree.STRIDE
    tamper_each(steps)


def test_an_edited_event_is_named_and_never_signed(log):
    """An event edited after its checkpoint is named by verification (the signed tree
    still holds its original); one edited before it is ever signed stops the signer."""
    signed = AuditLink.objects.get(chain=log, seq=42).pk
    tamper(["UPDATE audit_event SET target = 'key:forged' WHERE id = %s"], [signed])
    with pytest.raises(CommandError, match=str(signed)):
        call_command("audit_verify")
    _write(log.removeprefix("tenant:"), 5)
    unsigned = AuditLink.objects.get(chain=log, seq=303).pk
    tamper(["UPDATE audit_event SET target = 'key:forged' WHERE id = %s"], [unsigned])
    run = jobs.sign_checkpoints()
    assert str(unsigned) in run.refused[log]
    assert _held(log).size == 300


def test_a_row_with_a_correct_chain_hash_but_no_valid_mac_never_enters_a_checkpoint(log):
    tenant = log.removeprefix("tenant:")
    head = AuditLink.objects.get(chain=log, seq=300)
    forged = {
        "id": "4f0c5b7e-1d2a-4c3b-9e8f-0a1b2c3d4e5f",
        "chain": log,
        "seq": 301,
        "occurred_at": "2026-11-28T00:00:00.000000Z",
        "actor_type": "system",
        "actor_id": "x",
        "action": "key.revoked",
        "tenant": tenant,
        "target": "key:1",
        "outcome": "success",
        "request_id": "",
        "source_ip": None,
        "details": {},
    }
    leaf = merkle.leaf_hash(canonical_bytes(forged))
    tamper_each(
        [
            (
                "INSERT INTO audit_event (id, chain, occurred_at, actor_type, actor_id, action,"
                " tenant, target, outcome, request_id, details, mac) VALUES (%s, %s, %s, 'system',"
                " 'x', 'key.revoked', %s, 'key:1', 'success', '', '{}', %s)",
                [forged["id"], log, "2026-11-28 00:00:00+00:00", tenant, "0" * 64],
            ),
            (
                "INSERT INTO audit_link (event_id, chain, seq, prev_hash, hash, leaf_hash,"
                " integrated_at) VALUES (%s, %s, 301, %s, %s, %s, %s)",
                [
                    forged["id"],
                    log,
                    head.hash,
                    chain_hash(head.hash, leaf),
                    leaf.hex(),
                    "2026-11-28 00:00:00+00:00",
                ],
            ),
        ]
    )
    _refused_and_named(log, "MAC does not verify")
    assert _held(log).size == 300


def test_an_older_backup_restored_is_named(log):
    tables = ("audit_event", "audit_link", "audit_tree_node")
    tamper([f"CREATE TABLE backup_{t} AS SELECT * FROM {t}" for t in tables])
    try:
        _write(log.removeprefix("tenant:"), 50)
        jobs.sign_checkpoints()
        assert _held(log).size == 350
        tamper(
            [f"DELETE FROM {t}" for t in tables]
            + [f"INSERT INTO {t} SELECT * FROM backup_{t}" for t in tables]
        )
    finally:
        tamper([f"DROP TABLE backup_{t}" for t in tables])
    _refused_and_named(log, "300 events, fewer than the 350")


def test_a_chain_deleted_whole_is_named_by_its_checkpoint(log):
    tamper(
        ["DELETE FROM audit_event WHERE chain = %s", "DELETE FROM audit_link WHERE chain = %s"],
        [log],
    )
    _refused_and_named(log, "0 events, fewer than the 300")


def test_a_held_checkpoint_the_log_key_did_not_sign_is_refused(log, settings):
    stranger = Ed25519PrivateKey.generate()
    public = stranger.public_key().public_bytes_raw()
    fake = note.sign(
        note.Checkpoint(f"{settings.AUDIT_ORIGIN}/{log}", 1, b"\0" * 32).text(),
        note.Verifier.of(settings.AUDIT_ORIGIN, public),
        stranger.sign,
    )
    archive().replace(log, fake, archive().latest(log))
    _refused_and_named(log, "does not verify")
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(checkpoints.verifier().public_key).verify(
            base64.b64decode(fake.rsplit(" ", 1)[1])[4:], fake.partition("\n\n")[0].encode() + b"\n"
        )


def test_two_signers_cannot_both_replace_the_same_checkpoint(log):
    held = _note(log)
    archive().replace(log, held.note + "\u2014 first signer\n", held)
    with pytest.raises(ArchiveConflict):  # what the second read is no longer there
        archive().replace(log, held.note + "\u2014 second signer\n", held)
    assert _note(log).note.endswith("first signer\n")
    assert log in archive().chains()


def test_a_refusal_is_recorded_and_alerted_once(log):
    tamper(["DELETE FROM audit_link WHERE chain = %s AND seq = 300"], [log])
    jobs.sign_checkpoints()
    jobs.sign_checkpoints()
    broken = AuditEvent.objects.filter(action="audit.chain_broken", details__chain=log)
    assert broken.count() == 1
    assert "fewer than the 300" in broken.get().details["first_bad"]


def test_checkpoints_are_signed_every_minute_by_default(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["keyward.audit.sign_checkpoints"]
    assert entry == {"task": "keyward.audit.sign_checkpoints", "schedule": 60.0}


def test_a_stored_tree_cut_behind_the_logs_back_stops_that_chain_only(log):
    tamper(["DELETE FROM audit_link WHERE chain = %s AND seq = 295"], [log])
    other = rand("cp")
    with transaction.atomic():
        for n in range(20):
            record("test.checkpoint", actor=Actor.system(), tenant=other, details={"n": n})
            record("test.checkpoint", actor=Actor.system(), tenant=log.removeprefix("tenant:"))
    integrate_all()  # one batch over both chains
    assert AuditLink.objects.filter(chain=log, seq=320).exists(), "its events are still linked"
    assert AuditTreeNode.objects.filter(chain=chain_for(other), level=4, position=0).exists()
    assert not AuditTreeNode.objects.filter(chain=log, level=4, position=18).exists()
    run = jobs.sign_checkpoints()
    assert chain_for(other) in [issued.chain for issued in run.issued]
    assert log in run.refused, run


def test_a_destroyed_checkpoint_version_is_named_never_read_past(log):
    where = archive()
    if not isinstance(where, StoreArchive):
        pytest.skip("only a versioned store keeps the versions before the latest")
    _write(log.removeprefix("tenant:"), 5)
    jobs.sign_checkpoints()
    path = f"{PREFIX}/chain/{log}"
    newest = max(v.version for v in where.store.versions(path))
    where.store.destroy(path, [newest])  # the older checkpoint of 300 events is still there
    run = jobs.sign_checkpoints()
    assert f"version {newest} of {path}" in run.refused[log]
    assert [v.version for v in where.store.versions(path)][-1] == newest, "nothing was signed"
    with pytest.raises(CommandError) as failure:
        call_command("audit_verify")
    assert f"version {newest} of {path}" in str(failure.value) and log in str(failure.value)


def test_a_stored_subtree_removed_is_rebuilt_from_the_leaves_when_the_tree_grows(log):
    tamper(["DELETE FROM audit_tree_node WHERE chain = %s AND level = 4 AND position = 17"], [log])
    _write(log.removeprefix("tenant:"), 212)  # to 512 leaves: level 8's second subtree
    stored = AuditTreeNode.objects.filter(chain=log)
    assert stored.filter(level=4, position=17).exists(), "rebuilt and stored again"
    assert stored.filter(level=8, position=1).exists()
    run = jobs.sign_checkpoints()
    assert log not in run.refused, run.refused
    assert _held(log).root == merkle.root(_leaves(log))
    call_command("audit_verify")
