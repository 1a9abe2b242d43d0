"""The log side of c2sp.org/tlog-witness: each new checkpoint is submitted to the
configured witnesses with a consistency proof from the size each last cosigned, and the
cosignatures that verify under their keys are kept with the checkpoint. A witness that is
down, slow or refuses costs its cosignature, never the checkpoint; one that says it has
cosigned a larger tree of a chain than the log now holds is reporting a rollback."""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass

import httpx
from django.conf import settings

from audit import merkle, note, tree
from audit.witness import SIZE
from core.numbers import decimal

logger = logging.getLogger("keyward.audit")


@dataclass(frozen=True)
class Witness:
    verifier: note.Verifier
    url: str  # the submission prefix


def configured() -> list[Witness]:
    return [
        Witness(note.Verifier.parse(key), url.rstrip("/")) for key, url in settings.AUDIT_WITNESSES
    ]


def cosigned_by(signed_note: str) -> list[str]:
    """The configured witnesses whose cosignature on the note verifies."""
    try:
        return list(note.open_note(signed_note, [w.verifier for w in configured()]).signed_by)
    except note.NoteError:
        return []


class WitnessRefused(Exception):
    """A witness gave no cosignature: it is down, slow, or refused for its own reasons."""


class WitnessContradicts(WitnessRefused):
    """A witness holds evidence against the log: it has cosigned a larger tree of the
    chain than the log now holds, or a tree the log's cannot be proven to extend."""

    def __init__(self, witness: Witness, reason: str, seen: int | None = None) -> None:
        super().__init__(f"witness {witness.verifier.name} {reason}")
        self.seen = seen  # the larger size it has cosigned, when that is the evidence


# A witness this process could not reach is left alone for a while, so that one witness
# down does not add its timeout to every chain of every run. Only an optimisation: any
# process may try it again sooner.
REST_SECONDS = 60
_unreachable: dict[str, float] = {}


def _resting(witness: Witness) -> bool:
    failed = _unreachable.get(witness.url)
    return failed is not None and time.monotonic() - failed < REST_SECONDS


def cosign(chain: str, checkpoint: note.Checkpoint, signed_note: str, last_size: int) -> str:
    """`signed_note` with the cosignatures of the configured witnesses that have none on
    it yet and give one now; WitnessContradicts when one holds evidence of a rollback or
    a fork (nothing is cosigned then)."""
    have = set(cosigned_by(signed_note))
    lines = []
    for witness in configured():
        if witness.verifier.name in have or _resting(witness):
            continue
        try:
            lines.append(_submit(witness, chain, checkpoint, signed_note, last_size))
        except httpx.TransportError as exc:
            _unreachable[witness.url] = time.monotonic()
            logger.warning(
                "audit witness %s unreachable (%s); retried in %d s",
                witness.verifier.name,
                type(exc).__name__,
                REST_SECONDS,
            )
        except WitnessContradicts:
            raise
        except (httpx.HTTPError, WitnessRefused) as exc:
            logger.warning(
                "audit witness %s gave no cosignature for %s at %d: %s",
                witness.verifier.name,
                chain,
                checkpoint.size,
                exc if isinstance(exc, WitnessRefused) else type(exc).__name__,
            )
    return note.add_signatures(signed_note, lines)


def _submit(
    witness: Witness, chain: str, checkpoint: note.Checkpoint, signed_note: str, old: int
) -> str:
    for _ in range(2):  # the second with the size the witness says it has cosigned
        answer = _post(witness, chain, checkpoint, signed_note, min(old, checkpoint.size))
        if answer.status == 409:
            seen = _cosigned_size(answer)
            if seen > checkpoint.size:
                logger.error(
                    "audit witness %s has cosigned %d events of %s; the log holds %d",
                    witness.verifier.name,
                    seen,
                    chain,
                    checkpoint.size,
                )
                raise WitnessContradicts(
                    witness, "has cosigned a larger tree of this chain than the log holds", seen
                )
            old = seen
            continue
        if answer.status == 422:
            raise WitnessContradicts(
                witness, "finds this chain's tree inconsistent with the one it cosigned"
            )
        if answer.status != 200:
            raise WitnessRefused(f"HTTP {answer.status}")
        return _verified_line(witness, signed_note, answer.text)
    raise WitnessRefused("its size kept changing")


@dataclass(frozen=True)
class Answer:
    status: int
    kind: str  # the media type, without parameters
    text: str


MAX_ANSWER = 64 * 1024  # a few cosignature lines; a witness never needs more


def _post(
    witness: Witness, chain: str, checkpoint: note.Checkpoint, signed_note: str, old: int
) -> Answer:
    """One add-checkpoint request, proving the checkpoint consistent with size `old`; the
    answer is read within the timeout as a whole, up to 64 KiB."""
    try:
        proof = tree.consistency(chain, old, checkpoint.size) if 0 < old < checkpoint.size else []
    except merkle.ProofError as exc:
        raise WitnessRefused(f"no consistency proof from its size {old} ({exc})") from None
    body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    timeout = settings.AUDIT_WITNESS_TIMEOUT_MS / 1000
    deadline = time.monotonic() + timeout
    with httpx.stream(
        "POST",
        f"{witness.url}/add-checkpoint",
        content=(body + "\n" + signed_note).encode(),
        timeout=timeout,
        follow_redirects=False,
    ) as answer:
        read = bytearray()
        for chunk in answer.iter_bytes():
            read += chunk
            if len(read) > MAX_ANSWER or time.monotonic() > deadline:
                raise WitnessRefused("its answer was too large or too slow")
        kind = answer.headers.get("content-type", "").partition(";")[0].strip()
        return Answer(answer.status_code, kind, read.decode("utf-8", "replace"))


def _cosigned_size(answer: Answer) -> int:
    """The size a 409 says the witness last cosigned (c2sp.org/tlog-witness)."""
    size = decimal(answer.text.removesuffix("\n"), canonical=True)
    if answer.kind != SIZE or size is None:
        raise WitnessRefused("HTTP 409 without the size it has cosigned")
    return size


def _verified_line(witness: Witness, signed_note: str, answer: str) -> str:
    for line in answer.splitlines(keepends=True):
        try:
            note.open_note(note.add_signatures(signed_note, [line]), [witness.verifier])
        except note.NoteError:
            continue
        return line
    raise WitnessRefused("no cosignature of its key in the answer")
