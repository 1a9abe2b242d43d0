"""Bearer credentials: `<prefix><key id><secret><checksum>`.

The key id (12 base62 characters) finds the row, the secret carries 256 random bits, and a
6-character base62 CRC-32 checksum lets secret scanners recognise a real credential without
a database. Rows keep HMAC-SHA256(pepper, credential) and the pepper's id, so peppers can
rotate: a credential hashed under an older pepper is re-hashed under the current one the
next time it is used.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from core import sql
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
    plaintext = spell(prefix, key_id, _base62(secrets.randbits(256), SECRET_LEN))
    pepper_id = current_pepper_id()
    return NewCredential(plaintext, key_id, digest(plaintext, pepper_id), pepper_id)


def spell(prefix: str, key_id: str, secret: str) -> str:
    """The credential string of these parts, its checksum appended."""
    body = prefix + key_id + secret
    return body + _checksum(body)


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


@dataclass(frozen=True)
class Stored(Generic[C]):
    """A credential row as read, before it is believed: its digest and pepper id, and how
    to build the row (with whatever the lookup joined) once the digest has matched."""

    digest: str
    pepper_id: int
    load: Callable[[], C]


Lookup = Callable[[str], "Stored[C] | None"]


def stored(
    columns: sql.Columns, statement: str, key_id: str, build: Callable[[list[Any]], C]
) -> Stored[C] | None:
    """The row `statement` finds for `key_id`, whose leading columns are the credential's
    own `columns`; its values are converted and `build` runs only when it is loaded."""
    return stored_of(sql.fetch_raw(statement, [key_id]), columns, build)


def stored_of(
    rows: list[tuple[Any, ...]], columns: sql.Columns, build: Callable[[list[Any]], C]
) -> Stored[C] | None:
    """The credential row among `rows` as read (see `stored`), or None."""
    if not rows:
        return None
    raw = rows[0]
    return Stored(
        raw[columns.position("digest")],
        raw[columns.position("pepper_id")],
        lambda: build(columns.convert(raw)),
    )


@functools.cache
def _by_key_id(model: type[C]) -> Lookup[C]:
    columns = sql.Columns(list(model._meta.concrete_fields))
    # Only the model's own table and column names are interpolated.
    statement = f"SELECT {', '.join(columns.names())} FROM {model._meta.db_table} WHERE key_id = %s"  # noqa: S608

    def lookup(key_id: str) -> Stored[C] | None:
        return stored(columns, statement, key_id, lambda v: sql.instance(model, columns, v))

    return lookup


def verify(model: type[C], parsed: Parsed, lookup: Lookup[C] | None = None) -> C:
    """The row whose stored digest matches, in constant time; Rejected otherwise.

    An unknown key id costs what a wrong secret costs: one query, one HMAC, one comparison,
    and the row is built only after its digest matched, so timing does not tell the two
    apart, and both produce the same response. `lookup` replaces the default query when a
    caller loads the row (and what it needs with it) in one statement.
    """
    found: Stored[C] | None = (lookup or _by_key_id(model))(parsed.key_id)
    row = _believe(parsed, found)
    _after_use(model, row, parsed.plaintext)
    return row


async def averify(parsed: Parsed, lookup: Callable[[str], Awaitable[Stored[C] | None]]) -> C:
    """`verify` with a lookup awaited on an event loop. Noting the use is the caller's:
    when `use_to_note` has something, it verifies the synchronous way."""
    return _believe(parsed, await lookup(parsed.key_id))


def _believe(parsed: Parsed, found: Stored[C] | None) -> C:
    known = found is not None and found.pepper_id in settings.PEPPERS
    pepper_id = found.pepper_id if (found is not None and known) else current_pepper_id()
    computed = digest(parsed.plaintext, pepper_id)
    expected = found.digest if (found is not None and known) else _DUMMY_DIGEST
    if not hmac.compare_digest(computed, expected) or found is None:
        raise Rejected("unknown" if found is None else "mismatch")
    return found.load()


def use_to_note(row: HashedCredential, plaintext: str) -> dict[str, object]:
    """What a use of `row` changes: its last use, at most once a minute, and its digest
    when it was made under an older pepper."""
    now = timezone.now()
    interval = timedelta(seconds=settings.CREDENTIAL_LAST_USED_INTERVAL)
    changes: dict[str, object] = {}
    if row.last_used_at is None or now - row.last_used_at >= interval:
        changes["last_used_at"] = now
    if row.pepper_id != current_pepper_id():
        changes["pepper_id"] = current_pepper_id()
        changes["digest"] = digest(plaintext, current_pepper_id())
    return changes


def _after_use(model: type[C], row: C, plaintext: str) -> None:
    """Re-hash under the current pepper and note the use, each at most once a minute."""
    changes = use_to_note(row, plaintext)
    if not changes:
        return
    now = timezone.now()
    interval = timedelta(seconds=settings.CREDENTIAL_LAST_USED_INTERVAL)
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - interval)
    if "digest" in changes:
        stale |= Q(pepper_id=row.pepper_id)
    # Compare-and-set on the old digest: a rotation racing with this use wins.
    model._default_manager.filter(stale, pk=row.pk, digest=row.digest).update(**changes)
    for field, value in changes.items():
        setattr(row, field, value)
