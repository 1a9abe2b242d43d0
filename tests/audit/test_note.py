"""Signed notes and checkpoints against the published examples of c2sp.org/signed-note and
of Go's golang.org/x/mod/sumdb/note (Ed25519 is deterministic: signing the same text with
the same key gives the same note byte for byte)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import merkle
from audit.note import (
    COSIGNATURE_V1,
    Checkpoint,
    NoteError,
    Verifier,
    add_signatures,
    cosign,
    open_note,
    sign,
)

PETER_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_NOTE = (
    PETER_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1"
    "FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
SPEC_KEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6Tf"
    "Xppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def peter() -> Ed25519PrivateKey:
    seed = base64.b64decode(PETER_SIGNER.split("+", 4)[4])[1:]
    return Ed25519PrivateKey.from_private_bytes(seed)


def test_signing_reproduces_the_published_note_and_its_verifier_key():
    key = peter()
    raw = key.public_key().public_bytes_raw()
    verifier = Verifier.of("PeterNeumann", raw)
    assert str(verifier) == PETER_KEY
    assert sign(PETER_TEXT, verifier, key.sign) == PETER_NOTE


def test_the_published_notes_open_with_their_keys():
    assert open_note(PETER_NOTE, [Verifier.parse(PETER_KEY)]).text == PETER_TEXT
    opened = open_note(SPEC_NOTE, [Verifier.parse(SPEC_KEY)])
    assert opened == type(opened)("This is an example message.\n", ("example.com/foo",))


def test_an_altered_note_or_an_untrusted_key_is_refused():
    trusted = [Verifier.parse(PETER_KEY)]
    with pytest.raises(NoteError):
        open_note(PETER_NOTE.replace("cryptography", "Cryptography"), trusted)
    with pytest.raises(NoteError):
        open_note(PETER_NOTE, [Verifier.parse(SPEC_KEY)])
    with pytest.raises(NoteError):  # a changed key id no longer matches its key
        Verifier.parse(PETER_KEY.replace("c74f20a3", "c74f20a4"))
    for broken in ("", PETER_TEXT, PETER_NOTE.replace("\u2014", "-"), PETER_NOTE[:-1]):
        with pytest.raises(NoteError):
            open_note(broken, trusted)


def test_a_cosigned_checkpoint_names_every_trusted_signer():
    log, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    log_key = Verifier.of("keyward.example/audit/acme", log.public_key().public_bytes_raw())
    witness_key = Verifier.of("witness.example", witness.public_key().public_bytes_raw())
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(5)]
    checkpoint = Checkpoint("keyward.example/audit/acme", 5, merkle.root(leaves))
    note = sign(checkpoint.text(), log_key, log.sign)
    cosignature = sign(checkpoint.text(), witness_key, witness.sign).rpartition("\n\n")[2]
    cosigned = add_signatures(note, [cosignature])
    opened = open_note(cosigned, [log_key, witness_key])
    assert opened.signed_by == ("keyward.example/audit/acme", "witness.example")
    assert Checkpoint.parse(opened.text) == checkpoint
    assert open_note(cosigned, [witness_key]).signed_by == ("witness.example",)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "origin\n5\n",
        "origin\n05\nAAAA\n",
        "origin\nfive\n" + "A" * 44 + "\n",
        "\n5\nAA==\n",
        "origin\n\u0665\n" + "A" * 43 + "=\n",  # an Arabic-Indic five
        "origin\n\u00b2\n" + "A" * 43 + "=\n",  # a superscript two
        "origin\n" + "9" * 5000 + "\n" + "A" * 43 + "=\n",
    ],
)
def test_a_malformed_checkpoint_is_refused(text):
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_a_signer_counts_once_however_often_it_signed():
    doubled = PETER_NOTE + PETER_NOTE.rpartition("\n\n")[2]
    assert open_note(doubled, [Verifier.parse(PETER_KEY)]).signed_by == ("PeterNeumann",)


def test_a_trusted_signature_that_fails_refuses_the_whole_note():
    bad = PETER_NOTE.rpartition("\n\n")[2].replace("pAcElZ", "pAcElY")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(PETER_NOTE + bad, [Verifier.parse(PETER_KEY)])
    # An unknown key's signature, valid or not, is ignored.
    assert open_note(PETER_NOTE + SPEC_NOTE.rpartition("\n\n")[2], [Verifier.parse(PETER_KEY)])


def test_notes_with_control_characters_or_too_many_signatures_are_refused():
    key = peter()
    verifier = Verifier.of("PeterNeumann", key.public_key().public_bytes_raw())
    with pytest.raises(NoteError):
        sign("a line\x1b[2J with an escape\n", verifier, key.sign)
    line = PETER_NOTE.rpartition("\n\n")[2]
    assert open_note(PETER_NOTE + line * 15, [verifier])  # 16 signatures are accepted
    with pytest.raises(NoteError, match="signatures"):
        open_note(PETER_NOTE + line * 64, [verifier])


def test_a_cosignature_at_time_zero_or_past_2_63_never_verifies():
    witness = Ed25519PrivateKey.generate()
    key = Verifier.of("w.example/1", witness.public_key().public_bytes_raw(), COSIGNATURE_V1)
    text = Checkpoint("log.example/x", 1, merkle.leaf_hash(b"")).text()
    for timestamp in (0, 2**63, 2**64 - 1):
        signature = witness.sign(b"cosignature/v1\ntime %d\n" % timestamp + text.encode())
        raw = key.id + timestamp.to_bytes(8, "big") + signature
        line = f"\u2014 w.example/1 {base64.b64encode(raw).decode()}\n"
        with pytest.raises(NoteError):
            open_note(f"{text}\n{line}", [key])
    good = cosign(text, key, witness.sign, 1_700_000_000)
    assert open_note(f"{text}\n{good}", [key]).signed_by == ("w.example/1",)


def test_control_characters_in_signature_lines_are_refused():
    line = SPEC_NOTE.rpartition("\n\n")[2].replace("example.com/foo", "example.com/\x07foo")
    with pytest.raises(NoteError, match="control character"):
        open_note(PETER_NOTE + line, [Verifier.parse(PETER_KEY)])
