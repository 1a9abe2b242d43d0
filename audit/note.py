"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and the checkpoint text of
c2sp.org/tlog-checkpoint that they carry. No Django here: offline verifiers import it.

A note is text ending in a newline, a blank line, then one line per signature:
`— <key name> <base64 of the 4-byte key id and the signature>`. The key id is the first
four bytes of SHA-256(name || "\\n" || 0x01 || public key), so a signature names its key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.numbers import decimal

ED25519 = b"\x01"
# c2sp.org/tlog-cosignature: an Ed25519 key whose signatures carry a timestamp and sign
# `cosignature/v1\ntime <t>\n` followed by the note's text.
COSIGNATURE_V1 = b"\x04"
KINDS = (ED25519, COSIGNATURE_V1)
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space
# c2sp.org/signed-note: verifiers limit the signatures of a note and accept at least 16.
MAX_SIGNATURES = 64


class NoteError(ValueError):
    """A note, key or checkpoint that is malformed, or that no trusted key signed."""


def key_id(name: str, public_key: bytes, kind: bytes = ED25519) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + kind + public_key).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """A trusted key: its name, id and Ed25519 public key."""

    name: str
    id: bytes
    public_key: bytes
    kind: bytes = ED25519

    @classmethod
    def of(cls, name: str, public_key: bytes, kind: bytes = ED25519) -> Verifier:
        _check_name(name)
        return cls(name, key_id(name, public_key, kind), public_key, kind)

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """A verifier key, `<name>+<hex key id>+<base64 of 0x01 and the public key>`."""
        name, _, rest = text.partition("+")
        id_hex, _, material = rest.partition("+")
        try:
            raw = base64.b64decode(material, validate=True)
            wanted = bytes.fromhex(id_hex)
        except (binascii.Error, ValueError):
            raise NoteError("malformed verifier key") from None
        if len(id_hex) != 8 or raw[:1] not in KINDS or len(raw) != 33:
            raise NoteError("not an Ed25519 verifier key")
        verifier = cls.of(name, raw[1:], raw[:1])
        if verifier.id != wanted:
            raise NoteError("the verifier key's id does not match its name and key")
        return verifier

    def __str__(self) -> str:
        material = base64.b64encode(self.kind + self.public_key).decode()
        return f"{self.name}+{self.id.hex()}+{material}"

    def verifies(self, text: bytes, signature: bytes) -> bool:
        if self.kind == COSIGNATURE_V1:
            timestamp = int.from_bytes(signature[:8], "big")
            if len(signature) != 8 + 64 or not 0 < timestamp < 2**63:
                return False  # c2sp.org/tlog-cosignature: a timestamp is never zero
            text = _cosigned(text, timestamp)
            signature = signature[8:]
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except (InvalidSignature, ValueError):
            return False
        return True


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError("a key name is not empty and holds no space, newline or plus")


def sign(text: str, verifier: Verifier, signer: Callable[[bytes], bytes]) -> str:
    """`text` as a note signed by `signer`, whose public key `verifier` names."""
    _check_text(text)
    signature = signer(text.encode())
    line = base64.b64encode(verifier.id + signature).decode()
    return f"{text}\n{SIGNATURE_PREFIX}{verifier.name} {line}\n"


def _cosigned(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def cosign(text: str, verifier: Verifier, signer: Callable[[bytes], bytes], timestamp: int) -> str:
    """A tlog-cosignature line over a checkpoint's `text`, made at `timestamp` (POSIX
    seconds) by the cosigner `verifier` names."""
    _check_text(text)
    if verifier.kind != COSIGNATURE_V1 or not 0 < timestamp < 2**63:
        raise NoteError("a cosignature needs a cosigner key and a timestamp")
    signature = signer(_cosigned(text.encode(), timestamp))
    line = base64.b64encode(verifier.id + timestamp.to_bytes(8, "big") + signature).decode()
    return f"{SIGNATURE_PREFIX}{verifier.name} {line}\n"


def add_signatures(note: str, lines: Iterable[str]) -> str:
    """`note` with further signature lines (a witness's cosignatures)."""
    return note + "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _check_text(text: str) -> None:
    if not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise NoteError("a note's text ends in a newline and holds no blank line")
    if any(c < " " and c != "\n" for c in text):
        raise NoteError("a note holds no control character but newlines")


@dataclass(frozen=True)
class Opened:
    text: str
    signed_by: tuple[str, ...]  # names of the trusted keys whose signature verified


def open_note(note: str, trusted: Iterable[Verifier]) -> Opened:
    """The text of `note` and which trusted keys signed it, each named once; NoteError
    when the note is malformed, a trusted key's signature on it fails, or none of them
    signed it. Signatures of unknown keys are ignored."""
    text, blank, signatures = note.rpartition("\n\n")
    if not blank or not signatures.endswith("\n"):
        raise NoteError("malformed note")
    if any(c < " " and c != "\n" for c in signatures):
        raise NoteError("a note holds no control character but newlines")
    text += "\n"
    _check_text(text)
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    keys = {(v.name, v.id): v for v in trusted}
    signed_by: dict[str, None] = {}
    for line in lines:
        name, key_id, signature = _signature(line)
        key = keys.get((name, key_id))
        if key is None:
            continue
        if not key.verifies(text.encode(), signature):
            # c2sp.org/signed-note: such a note is malformed, whatever else signed it.
            raise NoteError(f"the signature of {name} does not verify")
        signed_by[name] = None
    if not signed_by:
        raise NoteError("no trusted key signed this note")
    return Opened(text, tuple(signed_by))


def _signature(line: str) -> tuple[str, bytes, bytes]:
    """A signature line's key name, key id and signature."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError("malformed signature line")
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise NoteError("malformed signature line") from None
    if len(raw) < 5:
        raise NoteError("malformed signature line")
    return name, raw[:4], raw[4:]


@dataclass(frozen=True)
class Checkpoint:
    """A log's state (c2sp.org/tlog-checkpoint): its origin, tree size and root hash."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[0]:
            raise NoteError("malformed checkpoint")
        size = decimal(lines[1], canonical=True)
        if size is None:
            raise NoteError("malformed checkpoint size")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except binascii.Error:
            raise NoteError("malformed checkpoint root") from None
        if len(root) != 32:
            raise NoteError("malformed checkpoint root")
        return cls(lines[0], size, root)
