"""Checkpoints as someone without the log's key would make them."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from audit import note


def forged_checkpoint(chain: str, size: int) -> str:
    """A checkpoint note for `chain` of `size` events, named as the log's but signed with
    a stranger's key."""
    stranger = Ed25519PrivateKey.generate()
    return note.sign(
        note.Checkpoint(f"{settings.AUDIT_ORIGIN}/{chain}", size, b"\0" * 32).text(),
        note.Verifier.of(settings.AUDIT_ORIGIN, stranger.public_key().public_bytes_raw()),
        stranger.sign,
    )
