"""The witness of c2sp.org/tlog-witness, over HTTP: it cosigns only checkpoints consistent
with the last one it cosigned for their origin, answers 409 with its size to a rollback,
refuses bad proofs (422), unknown origins (404), untrusted signatures (403) and malformed
bodies (400), records nothing when it refuses, and its cosignature verifies by a checker
written here from c2sp.org/tlog-cosignature alone. No Django: the witness runs without it."""

from __future__ import annotations

import base64
import hashlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit import merkle, note, witness

LOG_NAME = "audit.example/keyward"
ORIGIN = f"{LOG_NAME}/tenant:acme"
LEAVES = [merkle.leaf_hash(b"event %d" % i) for i in range(40)]


class Log:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.verifier = note.Verifier.of(LOG_NAME, self.key.public_key().public_bytes_raw())

    def checkpoint(self, size: int, origin: str = ORIGIN, root: bytes | None = None) -> str:
        top = merkle.root(LEAVES[:size]) if root is None else root
        text = note.Checkpoint(origin, size, top).text()
        return note.sign(text, self.verifier, self.key.sign)


def body(old: int, new: int, signed: str, proof: list[bytes] | None = None) -> bytes:
    if proof is None:
        proof = merkle.consistency_proof(old, LEAVES[:new]) if 0 < old < new else []
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old}\n{lines}\n{signed}".encode()


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def served(log, tmp_path) -> Iterator[tuple[str, witness.Witness]]:
    seen = witness.Witness(
        "witness.example/w1",
        witness.load_key(tmp_path / "witness.key"),
        [log.verifier],
        witness.State(tmp_path / "state"),
    )
    server = witness.Server(("127.0.0.1", 0), witness.handler(seen))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _raw_status(url: str, header: bytes) -> int:
    """The status a request with `header` gets, sent as raw bytes (clients refuse odd ones)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\n" + header + b"\r\n\r\n")
        return int(conn.recv(64).split(b" ")[1])


def add(url: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{url}/add-checkpoint", content=content, timeout=5)


def _check_cosignature_by_the_specification(line: str, vkey: str, checkpoint_text: str) -> int:
    """A cosignature line checked from c2sp.org/tlog-cosignature: the key id over the name,
    0x04 and the key; the signature over cosignature/v1, the time, the checkpoint text."""
    name, key_hex, material = vkey.split("+", 2)
    raw = base64.b64decode(material)
    assert raw[0] == 0x04 and len(raw) == 33
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_id.hex() == key_hex
    signer, blob = line.removeprefix("\u2014 ").rstrip("\n").split(" ")
    decoded = base64.b64decode(blob)
    assert signer == name and decoded[:4] == key_id and len(decoded) == 4 + 8 + 64
    timestamp = int.from_bytes(decoded[4:12], "big")
    message = f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(decoded[12:], message)
    return timestamp


def test_a_first_checkpoint_is_cosigned_as_the_specification_says(log, served):
    url, seen = served
    signed = log.checkpoint(10)
    answer = add(url, body(0, 10, signed))
    assert answer.status_code == 200, answer.text
    assert answer.text.startswith("\u2014 witness.example/w1 ") and answer.text.endswith("\n")
    text = note.Checkpoint(ORIGIN, 10, merkle.root(LEAVES[:10])).text()
    assert _check_cosignature_by_the_specification(answer.text, str(seen.verifier), text) > 0
    opened = note.open_note(signed + answer.text, [seen.verifier])
    assert opened.signed_by == ("witness.example/w1",)


def test_growth_is_cosigned_with_a_consistency_proof(log, served):
    url, _ = served
    assert add(url, body(0, 10, log.checkpoint(10))).status_code == 200
    assert add(url, body(10, 27, log.checkpoint(27))).status_code == 200
    assert add(url, body(27, 27, log.checkpoint(27))).status_code == 200  # the same again


def test_a_rolled_back_checkpoint_gets_409_and_the_witness_size(log, served):
    url, seen = served
    assert add(url, body(0, 20, log.checkpoint(20))).status_code == 200
    for old, new in ((0, 12), (10, 12), (12, 20)):
        answer = add(url, body(old, new, log.checkpoint(new)))
        assert answer.status_code == 409
        assert answer.text == "20\n"
        assert answer.headers["content-type"] == "text/x.tlog.size"
    assert seen.state.latest(ORIGIN).size == 20


def test_a_bad_proof_a_fork_or_a_false_empty_tree_gets_422_and_changes_nothing(log, served):
    url, seen = served
    assert add(url, body(0, 10, log.checkpoint(10))).status_code == 200
    proof = merkle.consistency_proof(10, LEAVES[:20])
    altered = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    forked = log.checkpoint(10, root=merkle.leaf_hash(b"forked"))
    for content in (
        body(10, 20, log.checkpoint(20), altered),
        body(10, 20, log.checkpoint(20), proof[:-1]),
        body(10, 10, forked),
    ):
        assert add(url, content).status_code == 422
    assert seen.state.latest(ORIGIN).size == 10
    fresh = f"{LOG_NAME}/tenant:fresh"
    empty_with_root = log.checkpoint(0, fresh, root=merkle.leaf_hash(b"x"))
    assert add(url, body(0, 0, empty_with_root)).status_code == 422
    assert add(url, body(0, 5, log.checkpoint(5, fresh), [LEAVES[0]])).status_code == 422
    assert seen.state.latest(fresh) is None


def test_unknown_origins_untrusted_keys_and_malformed_bodies_are_refused(log, served):
    url, seen = served
    assert add(url, body(0, 5, log.checkpoint(5, "other.example/log"))).status_code == 404
    stranger = Log()
    assert add(url, body(0, 5, stranger.checkpoint(5))).status_code == 403
    tampered = log.checkpoint(5).replace("\n5\n", "\n6\n", 1)
    assert add(url, body(0, 6, tampered)).status_code == 403
    # A valid signature does not excuse a trusted key's failing one beside it.
    name, _, encoded = log.checkpoint(5).rpartition("\n\n")[2].rpartition(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[40] ^= 1  # in the signature, after the key id
    failing = f"{name} {base64.b64encode(raw).decode()}\n"
    assert add(url, body(0, 5, log.checkpoint(5) + failing)).status_code == 403
    assert add(url, body(7, 5, log.checkpoint(5))).status_code == 400  # old beyond the size
    for content in (
        b"",
        b"old 01\n\n" + log.checkpoint(5).encode(),
        "old \u00b2\n\n".encode() + log.checkpoint(5).encode(),
        b"old " + b"9" * 5000 + b"\n\n" + log.checkpoint(5).encode(),
        b"new 0\n\n" + log.checkpoint(5).encode(),
        b"old 0\nnot base64!\n\n" + log.checkpoint(5).encode(),
        ("old 1\n" + "AAAA\n" * 64 + "\n").encode() + log.checkpoint(5).encode(),
        b"\xff\xfe",
    ):
        assert add(url, content).status_code == 400, content[:20]
    assert httpx.post(f"{url}/other", content=b"x").status_code == 404
    assert _raw_status(url, b"Content-Length: \xb2") == 400  # a superscript two
    assert _raw_status(url, b"Content-Length: " + b"9" * 5000) == 400
    assert seen.state.latest(ORIGIN) is None


def test_two_submissions_at_once_never_roll_the_witness_back(log, served):
    url, seen = served
    assert add(url, body(0, 10, log.checkpoint(10))).status_code == 200
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda n=n: statuses.append(add(url, body(10, n, log.checkpoint(n))).status_code)
        )
        for n in (15, 30, 22, 39)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    assert seen.state.latest(ORIGIN).size in (15, 30, 22, 39)


def test_the_witness_runs_without_django(tmp_path):
    check = (
        "import sys, audit.witness; assert not [m for m in sys.modules if m.startswith('django')]"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", check], cwd=root, check=True, env={"PATH": ""})
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "audit.witness",
            "--name",
            "w.example/1",
            "--key",
            str(tmp_path / "k"),
            "--state",
            str(tmp_path / "s"),
            "--print-key",
        ],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": ""},
    )
    assert note.Verifier.parse(printed.stdout.strip()).kind == note.COSIGNATURE_V1


def test_slow_or_too_many_clients_are_cut_off(log, tmp_path):
    seen = witness.Witness(
        "witness.example/w1",
        witness.load_key(tmp_path / "witness.key"),
        [log.verifier],
        witness.State(tmp_path / "state"),
    )
    server_class = type("Small", (witness.Server,), {"max_connections": 2, "deadline_seconds": 1})
    server = server_class(("127.0.0.1", 0), witness.handler(seen))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = server.server_address
    try:
        slow = [socket.create_connection(address, timeout=5) for _ in range(2)]
        for conn in slow:  # a request line begun, never finished
            conn.sendall(b"POST /add-checkpoint HTTP/1.1\r\n")
        time.sleep(0.2)
        with socket.create_connection(address, timeout=5) as third:
            assert third.recv(64) == b"", "a client past the limit is hung up on at once"
        for conn in slow:
            assert conn.recv(64) == b"", "a client past its deadline is hung up on"
            conn.close()
        time.sleep(0.1)
        url = f"http://{address[0]}:{address[1]}"
        assert add(url, body(0, 5, log.checkpoint(5))).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
