"""The log side of tlog-witness against two real witness processes (`python -m
audit.witness`): each new checkpoint carries their cosignatures; a witness that is down
costs its cosignature, not the checkpoint, and gets the checkpoint again once it is back;
verification can require k of n cosignatures and names a checkpoint that lacks them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command

from audit import note
from audit.actors import Actor
from audit.models import AuditEvent, ChainCheck
from audit.recorder import chain_for, record
from audit.sequencer import integrate_all
from auditor import checkpoints, jobs, signing, witnesses
from auditor.archive import ArchiveConflict, Held, archive
from tests.audit.tamper import tamper
from tests.bao import free_port
from tests.factories import rand

ROOT = Path(__file__).resolve().parents[2]


class WitnessProcess:
    def __init__(self, name: str, folder: Path, log_key: str) -> None:
        self.name, self.folder, self.log_key = name, folder, log_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "audit.witness", "--name", name]
        command += ["--key", str(folder / "key"), "--state", str(folder / "state")]
        self.command = [*command, "--log", log_key, "--listen", f"127.0.0.1:{self.port}"]
        printed = subprocess.run(
            [*command, "--print-key"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        self.vkey = printed.stdout.strip()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.process.stdout is not None
        assert "witness " in self.process.stdout.readline()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def two_witnesses(db, settings, tmp_path) -> Iterator[list[WitnessProcess]]:
    yield from _started(settings, tmp_path)


@pytest.fixture
def witnessed(committed_db, settings, tmp_path) -> Iterator[list[WitnessProcess]]:
    """Two witnesses, over events committed where the database's owner can reach them."""
    yield from _started(settings, tmp_path)


def _started(settings, tmp_path) -> Iterator[list[WitnessProcess]]:
    log_key = str(checkpoints.verifier())
    pair = [WitnessProcess(f"witness.example/w{i}", tmp_path / f"w{i}", log_key) for i in (1, 2)]
    for witness in pair:
        witness.start()
    settings.AUDIT_WITNESSES = [(w.vkey, w.url) for w in pair]
    witnesses._unreachable.clear()  # no witness is resting from another test's failure
    try:
        yield pair
    finally:
        for witness in pair:
            witness.stop()


def _grow(tenant: str, count: int) -> None:
    for n in range(count):
        record("test.witnessed", actor=Actor.system(), tenant=tenant, details={"n": n})
    integrate_all()


def _cosigners(chain: str) -> list[str]:
    held = archive().latest(chain)
    assert held is not None
    return witnesses.cosigned_by(held.note)


def test_each_checkpoint_carries_the_witnesses_cosignatures(two_witnesses, settings):
    tenant = rand("wit")
    _grow(tenant, 5)
    assert not jobs.sign_checkpoints().refused
    chain = chain_for(tenant)
    assert sorted(_cosigners(chain)) == ["witness.example/w1", "witness.example/w2"]
    _grow(tenant, 7)
    jobs.sign_checkpoints()
    held = archive().latest(chain)
    assert held is not None
    opened = note.open_note(held.note, [w.verifier for w in witnesses.configured()])
    assert note.Checkpoint.parse(opened.text).size == 12
    settings.AUDIT_WITNESS_QUORUM = 2
    call_command("audit_verify")


def test_a_witness_down_costs_its_cosignature_and_gets_it_back(two_witnesses, settings):
    tenant = rand("wit")
    _grow(tenant, 3)
    jobs.sign_checkpoints()
    chain = chain_for(tenant)
    two_witnesses[1].stop()
    _grow(tenant, 4)
    run = jobs.sign_checkpoints()
    assert not run.refused
    assert _cosigners(chain) == ["witness.example/w1"]
    settings.AUDIT_WITNESS_QUORUM = 2
    with pytest.raises(CommandError) as failure:
        call_command("audit_verify")
    assert "carries 1 of the 2 witness cosignatures required" in str(failure.value)
    settings.AUDIT_WITNESS_QUORUM = 1
    call_command("audit_verify")
    # Back, it is offered the unchanged checkpoint with a proof from the size it last saw.
    two_witnesses[1].start()
    witnesses._unreachable.clear()  # as after its rest
    jobs.sign_checkpoints()
    assert sorted(_cosigners(chain)) == ["witness.example/w1", "witness.example/w2"]


def test_a_witness_refuses_a_checkpoint_the_log_rolled_back(two_witnesses):
    tenant = rand("wit")
    _grow(tenant, 6)
    jobs.sign_checkpoints()
    held = archive().latest(chain_for(tenant))
    assert held is not None
    older = held.note.split("\n\n")[0]  # the same text, re-signed at a smaller size below
    size = int(older.split("\n")[1])
    smaller = note.Checkpoint(older.split("\n")[0], size - 2, b"\0" * 32)
    resigned = note.sign(smaller.text(), checkpoints.verifier(), signing.checkpoint_signer().sign)
    answer = httpx.post(
        f"{two_witnesses[0].url}/add-checkpoint", content=f"old {size - 2}\n\n{resigned}".encode()
    )
    assert answer.status_code == 409 and answer.text == f"{size}\n"
    assert answer.headers["content-type"] == "text/x.tlog.size"


def test_one_witness_cosigning_twice_counts_once(two_witnesses, settings):
    tenant = rand("wit")
    _grow(tenant, 4)
    jobs.sign_checkpoints()
    chain = chain_for(tenant)
    held = archive().latest(chain)
    assert held is not None
    body, _, lines = held.note.rpartition("\n\n")
    first = next(line for line in lines.splitlines() if "witness.example/w1" in line)
    own = next(line for line in lines.splitlines() if "witness.example/w" not in line)
    doubled = f"{body}\n\n{own}\n{first}\n{first}\n"
    archive().replace(chain, doubled, held)
    assert witnesses.cosigned_by(doubled) == ["witness.example/w1"]
    settings.AUDIT_WITNESS_QUORUM = 2
    with pytest.raises(CommandError) as failure:
        call_command("audit_verify")
    assert "carries 1 of the 2 witness cosignatures required" in str(failure.value)


def _restored(chain: str, events: int, held_then: Held | None) -> None:
    """The database and the checkpoint archive both restored from a backup of `events`
    events, as their owner would."""
    tamper(
        [
            "DELETE FROM audit_event WHERE id IN"
            f" (SELECT event_id FROM audit_link WHERE chain = %s AND seq > {events})",
            f"DELETE FROM audit_link WHERE chain = %s AND seq > {events}",
        ],
        [chain],
    )
    assert held_then is not None
    archive().replace(chain, held_then.note, archive().latest(chain))


def test_a_witness_that_saw_more_stops_a_log_restored_with_its_checkpoints(witnessed):
    tenant = rand("wit")
    chain = chain_for(tenant)
    _grow(tenant, 3)
    jobs.sign_checkpoints()
    backup = archive().latest(chain)
    _grow(tenant, 3)
    jobs.sign_checkpoints()  # the witnesses have cosigned 6 events
    _restored(chain, 3, backup)
    _grow(tenant, 1)

    run = jobs.sign_checkpoints()
    assert "has cosigned a larger tree of this chain than the log holds" in run.refused[chain]
    assert archive().latest(chain) == backup, "nothing is kept of a refused checkpoint"
    broken = AuditEvent.objects.filter(action="audit.chain_broken", details__chain=chain)
    assert broken.count() == 1
    jobs.verify_chains()  # the events and the archive agree: that does not clear the refusal
    assert ChainCheck.objects.get(chain=chain).ok is False
    _grow(tenant, 1)
    assert chain in jobs.sign_checkpoints().refused
    assert broken.count() == 1, "recorded and notified once while it stands"

    _grow(tenant, 2)  # past the witnesses' size now, but not on the tree they cosigned
    run = jobs.sign_checkpoints()
    assert "inconsistent with the one it cosigned" in run.refused[chain]
    assert archive().latest(chain) == backup


def test_a_witness_ahead_because_another_signer_was_faster_is_no_rollback(witnessed):
    tenant = rand("wit")
    chain = chain_for(tenant)
    _grow(tenant, 4)
    jobs.sign_checkpoints()
    held = archive().latest(chain)
    assert held is not None
    _grow(tenant, 4)  # another signer has read all 8 and reached the witnesses first ...
    faster = checkpoints.sign_chain(chain)
    assert faster.checkpoint.size == 8
    lagging = checkpoints.open_held(chain, held)  # ... this one had read only the first 4
    bare = note.sign(lagging.text(), checkpoints.verifier(), signing.checkpoint_signer().sign)
    with pytest.raises(ArchiveConflict):
        checkpoints._cosigned(chain, lagging, bare, 0, archive(), held)
    assert not ChainCheck.objects.filter(chain=chain, ok=False).exists()


class _Flooding(BaseHTTPRequestHandler):
    """A witness that answers with an endless body, or trickles one byte at a time."""

    protocol_version = "HTTP/1.1"
    trickle = False

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        try:
            for _ in range(100_000):
                self.wfile.write(b"x" if self.trickle else b"x" * 4096)
                self.wfile.flush()
                if self.trickle:
                    time.sleep(0.2)
        except OSError:
            pass  # the log side hung up, as it should

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.mark.parametrize("trickle", [False, True])
def test_a_witness_answering_too_much_or_too_slowly_costs_only_its_cosignature(
    db, settings, trickle
):
    handler = type("Handler", (_Flooding,), {"trickle": trickle})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cosigner = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    vkey = note.Verifier.of("w.example/flood", cosigner, note.COSIGNATURE_V1)
    settings.AUDIT_WITNESSES = [(str(vkey), f"http://127.0.0.1:{server.server_address[1]}")]
    settings.AUDIT_WITNESS_TIMEOUT_MS = 1000
    witnesses._unreachable.clear()
    tenant = rand("wit")
    _grow(tenant, 3)
    started = time.monotonic()
    try:
        run = jobs.sign_checkpoints()
    finally:
        server.shutdown()
        server.server_close()
    assert time.monotonic() - started < 10
    assert chain_for(tenant) in [issued.chain for issued in run.issued]
    assert _cosigners(chain_for(tenant)) == []
