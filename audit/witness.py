"""A witness of the audit log (c2sp.org/tlog-witness), small enough for another team or a
customer to run on its own: `python -m audit.witness --help`. No Django, no database: the
latest cosigned checkpoint of each origin is a file in its state directory.

`POST <prefix>/add-checkpoint` takes an old size, a consistency proof and a checkpoint
signed by a log it trusts; it cosigns (c2sp.org/tlog-cosignature, Ed25519, `cosignature/v1`)
only a checkpoint consistent with the last one it cosigned for that origin, and answers
409 with its size when the log's old size is not that one (a rollback, or a log that does
not know what this witness saw). Checking and recording happen under one lock, so two
requests can never roll the witness back."""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import merkle, note
from core.numbers import decimal

MAX_BODY = 64 * 1024
MAX_PROOF_LINES = 63
TEXT = "text/plain; charset=utf-8"
SIZE = "text/x.tlog.size"  # c2sp.org/tlog-witness: the type of a 409's body, exactly


class Refused(Exception):
    """An answer other than a cosignature: the HTTP status, and the body to send."""

    def __init__(self, status: int, body: str, content_type: str = TEXT) -> None:
        super().__init__(body)
        self.status, self.body, self.content_type = status, body, content_type


@dataclass(frozen=True)
class Submission:
    old: int
    proof: list[bytes]
    note: str


def parse(body: bytes) -> Submission:
    """An add-checkpoint body: `old N`, proof lines, a blank line, a signed checkpoint."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8\n") from None
    head, blank, checkpoint = text.partition("\n\n")
    lines = head.split("\n")
    if not blank or not lines[0].startswith("old "):
        raise Refused(400, "expected an old size line, proof lines, a blank line, a checkpoint\n")
    old = decimal(lines[0][4:], canonical=True)
    if old is None:
        raise Refused(400, "malformed old size\n")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise Refused(400, "too many proof lines\n")
    try:
        proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
    except binascii.Error:
        raise Refused(400, "malformed proof line\n") from None
    if any(len(h) != 32 for h in proof):
        raise Refused(400, "malformed proof line\n")
    return Submission(old, proof, checkpoint)


class State:
    """The latest cosigned checkpoint of each origin, a file each, replaced atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()

    def _path(self, origin: str) -> Path:
        return self.root / (quote(origin, safe="") + ".checkpoint")

    def latest(self, origin: str) -> note.Checkpoint | None:
        try:
            return note.Checkpoint.parse(self._path(origin).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One check-and-record at a time, across threads and processes."""
        with self._lock, open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record(self, checkpoint: note.Checkpoint) -> None:
        path = self._path(checkpoint.origin)
        scratch = path.with_suffix(".tmp")
        with open(scratch, "w", encoding="utf-8") as out:
            out.write(checkpoint.text())
            out.flush()
            os.fsync(out.fileno())
        os.replace(scratch, path)


class Witness:
    """Cosigns checkpoints of the logs it trusts: each log key covers the origins that
    begin with its key name and a slash (one per chain of a Keyward deployment)."""

    def __init__(
        self,
        name: str,
        key: Ed25519PrivateKey,
        logs: Sequence[note.Verifier],
        state: State,
        clock: Callable[[], float] = time.time,
    ) -> None:
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.verifier = note.Verifier.of(name, public, note.COSIGNATURE_V1)
        self.key, self.logs, self.state, self.clock = key, list(logs), state, clock

    def _logs_for(self, origin: str) -> list[note.Verifier]:
        return [v for v in self.logs if origin == v.name or origin.startswith(v.name + "/")]

    def add_checkpoint(self, body: bytes) -> str:
        """The cosignature line for a submission, or Refused with the status to answer."""
        submission = parse(body)
        origin = submission.note.partition("\n")[0]
        trusted = self._logs_for(origin)
        if not trusted:
            raise Refused(404, "unknown origin\n")
        try:
            opened = note.open_note(submission.note, trusted)
            checkpoint = note.Checkpoint.parse(opened.text)
        except note.NoteError:
            raise Refused(403, "no valid signature of a trusted log key\n") from None
        if submission.old > checkpoint.size:
            raise Refused(400, "the old size is larger than the checkpoint's\n")
        with self.state.locked():
            latest = self.state.latest(origin)
            size = latest.size if latest else 0
            if submission.old != size:
                raise Refused(409, f"{size}\n", SIZE)
            _consistent(latest, checkpoint, submission.proof)
            self.state.record(checkpoint)
            # Under the lock: cosignatures of one origin are timestamped in size order.
            return note.cosign(opened.text, self.verifier, self.key.sign, int(self.clock()))


def _consistent(
    latest: note.Checkpoint | None, checkpoint: note.Checkpoint, proof: list[bytes]
) -> None:
    if checkpoint.size == 0 and checkpoint.root != merkle.EMPTY_ROOT:
        raise Refused(422, "an empty tree has the empty root\n")
    if latest is None or latest.size == 0:
        if proof:
            raise Refused(422, "no proof is needed from an empty tree\n")
        return
    try:
        merkle.verify_consistency(latest.size, checkpoint.size, latest.root, checkpoint.root, proof)
    except merkle.ProofError:
        raise Refused(422, "the consistency proof does not verify\n") from None


def handler(witness: Witness, prefix: str = "") -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # seconds a client may take to send its request (no slowloris)

        def do_POST(self) -> None:
            length = decimal(self.headers.get("Content-Length", ""))
            try:
                if self.path != f"{prefix}/add-checkpoint":
                    raise Refused(404, "not found\n")
                if length is None or length > MAX_BODY:
                    raise Refused(400, "a body of known length, at most 64 KiB\n")
                cosignature = witness.add_checkpoint(self.rfile.read(length))
            except Refused as refused:
                self.close_connection = True  # the body may not have been read
                self._answer(refused.status, refused.body, refused.content_type)
                return
            self._answer(200, cosignature)

        def _answer(self, status: int, body: str, content_type: str = TEXT) -> None:
            raw = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: object) -> None:
            return  # requests carry no secret, but a witness log is noise by default

    return Handler


class Server(ThreadingHTTPServer):
    """Serves at most `max_connections` clients at once, each for at most
    `deadline_seconds` in all: a client sending a byte at a time holds a thread for no
    longer, and too many of them cannot take every thread."""

    request_queue_size = 128
    daemon_threads = True
    max_connections = 64
    deadline_seconds = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # busy: the client may try again
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        cut = threading.Timer(self.deadline_seconds, _hang_up, (request,))
        cut.daemon = True
        cut.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            cut.cancel()
            self._slots.release()


def _hang_up(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


def load_key(path: Path) -> Ed25519PrivateKey:
    """The witness's key: a file holding its 32-byte seed in base64, made on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        seed = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(seed).decode() + "\n")
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(path.read_text().strip()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m audit.witness",
        description="A tlog-witness for Keyward audit logs: cosigns consistent checkpoints.",
    )
    parser.add_argument(
        "--name", required=True, help="the witness's key name, e.g. witness.example/w1"
    )
    parser.add_argument(
        "--key", required=True, type=Path, help="its private key file (made if absent)"
    )
    parser.add_argument(
        "--state", required=True, type=Path, help="directory of cosigned checkpoints"
    )
    parser.add_argument(
        "--log", action="append", default=[], help="a trusted log's verifier key (repeatable)"
    )
    parser.add_argument("--listen", default="127.0.0.1:7380", help="address:port to serve on")
    parser.add_argument("--prefix", default="", help="submission prefix, e.g. /witness")
    parser.add_argument(
        "--print-key", action="store_true", help="print the witness's verifier key and exit"
    )
    args = parser.parse_args(argv)
    try:
        logs = [note.Verifier.parse(vkey) for vkey in args.log]
    except note.NoteError as exc:
        parser.error(f"--log: {exc}")
    witness = Witness(args.name, load_key(args.key), logs, State(args.state))
    if args.print_key:
        print(witness.verifier)
        return
    if not logs:
        parser.error("at least one --log is needed")
    host, _, port = args.listen.rpartition(":")
    server = Server((host, int(port)), handler(witness, args.prefix.rstrip("/")))
    print(f"witness {witness.verifier} on http://{args.listen}{args.prefix}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
