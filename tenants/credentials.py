"""Bearer credentials: `<prefix><key id><secret><checksum>`.

The key id (12 base62 characters) finds the row, the secret carries 256 random bits, and a
6-character base62 CRC-32 checksum lets secret scanners recognise a real credential without
a database. Rows keep HMAC-SHA256(pepper, credential) and the pepper's id, so peppers can
rotate: a credential hashed under an older pepper is re-hashed under the current one the
next time it is used.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from tenants.models import HashedCredential

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LEN = 12
SECRET_LEN = 43  # 62**43 > 2**256: the secret holds 256 random bits
CHECKSUM_LEN = 6
ADMIN_PREFIX = "kwa_"
PRINCIPAL_PREFIX = "kwp_"
TOKEN_PREFIX = "kwt_"
PREFIXES = (ADMIN_PREFIX, PRINCIPAL_PREFIX, TOKEN_PREFIX)
_BODY_LEN = KEY_ID_LEN + SECRET_LEN
_DUMMY_DIGEST = "0" * 64

C = TypeVar("C", bound=HashedCredential)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


def _checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode("ascii")), CHECKSUM_LEN)


@dataclass(frozen=True)
class NewCredential:
    """A freshly minted credential: `plaintext` goes to the caller once, the rest is stored."""

    plaintext: str
    key_id: str
    digest: str
    pepper_id: int


@dataclass(frozen=True)
class Parsed:
    prefix: str
    key_id: str
    plaintext: str


def current_pepper_id() -> int:
    return max(settings.PEPPERS)


def digest(plaintext: str, pepper_id: int) -> str:
    pepper: bytes = settings.PEPPERS[pepper_id]
    return hmac.new(pepper, plaintext.encode("ascii"), hashlib.sha256).hexdigest()


def mint(prefix: str) -> NewCredential:
    """A new credential with `prefix`, hashed under the current pepper."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown credential prefix {prefix!r}")
    key_id = "".join(secrets.choice(ALPHABET) for _ in range(KEY_ID_LEN))
    secret = _base62(secrets.randbits(256), SECRET_LEN)
    body = prefix + key_id + secret
    plaintext = body + _checksum(body)
    pepper_id = current_pepper_id()
    return NewCredential(plaintext, key_id, digest(plaintext, pepper_id), pepper_id)


def parse(presented: str) -> Parsed | None:
    """Split a presented credential; None unless its shape and checksum are right."""
    prefix = presented[:4]
    if prefix not in PREFIXES or len(presented) != 4 + _BODY_LEN + CHECKSUM_LEN:
        return None
    body, check = presented[: 4 + _BODY_LEN], presented[4 + _BODY_LEN :]
    if not all(c in ALPHABET for c in presented[4:]):
        return None
    if not hmac.compare_digest(_checksum(body), check):
        return None
    return Parsed(prefix, presented[4 : 4 + KEY_ID_LEN], presented)


class Rejected(Exception):
    """A credential that does not authenticate; `reason` is for the audit log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify(model: type[C], parsed: Parsed, lookup: Callable[[str], C | None] | None = None) -> C:
    """The row whose stored digest matches, in constant time; Rejected otherwise.

    An unknown key id costs the same HMAC as a wrong secret, so timing does not tell them
    apart, and both produce the same response. `lookup` replaces the default query when a
    caller loads the row (and what it needs with it) more cheaply.
    """
    if lookup is not None:
        row = lookup(parsed.key_id)
    else:
        row = model._default_manager.filter(key_id=parsed.key_id).first()
    known = row is not None and row.pepper_id in settings.PEPPERS
    pepper_id = row.pepper_id if (row is not None and known) else current_pepper_id()
    computed = digest(parsed.plaintext, pepper_id)
    expected = row.digest if (row is not None and known) else _DUMMY_DIGEST
    if not hmac.compare_digest(computed, expected) or row is None:
        raise Rejected("unknown" if row is None else "mismatch")
    _after_use(model, row, parsed.plaintext)
    return row


def _after_use(model: type[C], row: C, plaintext: str) -> None:
    """Re-hash under the current pepper and note the use, each at most once a minute."""
    now = timezone.now()
    interval = timedelta(seconds=settings.CREDENTIAL_LAST_USED_INTERVAL)
    changes: dict[str, object] = {}
    if row.last_used_at is None or now - row.last_used_at >= interval:
        changes["last_used_at"] = now
    if row.pepper_id != current_pepper_id():
        changes["pepper_id"] = current_pepper_id()
        changes["digest"] = digest(plaintext, current_pepper_id())
    if not changes:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - interval)
    if "digest" in changes:
        stale |= Q(pepper_id=row.pepper_id)
    # Compare-and-set on the old digest: a rotation racing with this use wins.
    model._default_manager.filter(stale, pk=row.pk, digest=row.digest).update(**changes)
    for field, value in changes.items():
        setattr(row, field, value)
