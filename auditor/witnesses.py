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

from audit import note, tree

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
    pass


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
    it yet and give one now."""
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
    timeout = settings.AUDIT_WITNESS_TIMEOUT_MS / 1000
    for _ in range(2):  # the second with the size the witness says it has cosigned
        old = min(old, checkpoint.size)
        proof = tree.consistency(chain, old, checkpoint.size) if 0 < old < checkpoint.size else []
        body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        answer = httpx.post(
            f"{witness.url}/add-checkpoint",
            content=(body + "\n" + signed_note).encode(),
            timeout=timeout,
            follow_redirects=False,
        )
        if answer.status_code == 409 and answer.text.strip().isdigit():
            seen = int(answer.text.strip())
            if seen > checkpoint.size:
                raise WitnessRefused(
                    f"it has cosigned a tree of {seen} events, more than the {checkpoint.size} "
                    f"the log holds now (a rollback?)"
                )
            old = seen
            continue
        if answer.status_code != 200:
            raise WitnessRefused(f"HTTP {answer.status_code}")
        return _verified_line(witness, signed_note, answer.text)
    raise WitnessRefused("its size kept changing")


def _verified_line(witness: Witness, signed_note: str, answer: str) -> str:
    for line in answer.splitlines(keepends=True):
        try:
            note.open_note(note.add_signatures(signed_note, [line]), [witness.verifier])
        except note.NoteError:
            continue
        return line
    raise WitnessRefused("no cosignature of its key in the answer")
