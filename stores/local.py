"""The `local` secret store: envelope encryption in the database.

Each version gets a fresh AES-256-GCM data key; the data key is wrapped by the newest key
of the master ring (KEYWARD_MASTER_KEYS) and both encryptions bind the path (tenant and key
id) and the version as associated data, so a ciphertext copied onto another row does not
decrypt. Rotating the master key re-wraps data keys only; secrets are never re-encrypted.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from stores.base import SecretStore, VersionInfo
from stores.exceptions import SecretMissing, StoreConflict, StoreUnavailable
from stores.models import LocalSecret

FORMAT = b"keyward/local/v1"


def _aad(path: str, version: int, part: bytes) -> bytes:
    return b"|".join((FORMAT, part, path.encode(), str(version).encode()))


def _master(key_id: int) -> AESGCM:
    key = settings.MASTER_KEYS.get(key_id)
    if key is None:
        raise StoreUnavailable(f"master key {key_id} is not configured")
    return AESGCM(key)


class LocalStore(SecretStore):
    backend = "local"

    def put(self, path: str, secret: str, *, expected_version: int) -> int:
        version = expected_version + 1
        master_id = max(settings.MASTER_KEYS)
        data_key = AESGCM.generate_key(bit_length=256)
        nonce, key_nonce = os.urandom(12), os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, secret.encode(), _aad(path, version, b"data"))
        wrapped = _master(master_id).encrypt(key_nonce, data_key, _aad(path, version, b"key"))
        latest = LocalSecret.objects.filter(path=path).order_by("-version").first()
        if (latest.version if latest else 0) != expected_version:
            raise StoreConflict()
        try:
            with transaction.atomic():
                LocalSecret.objects.create(
                    path=path,
                    version=version,
                    master_key_id=master_id,
                    wrapped_key=wrapped,
                    key_nonce=key_nonce,
                    nonce=nonce,
                    ciphertext=ciphertext,
                )
        except IntegrityError:
            raise StoreConflict() from None
        return version

    def get(self, path: str, version: int) -> str:
        row = LocalSecret.objects.filter(path=path, version=version, destroyed_at=None).first()
        if row is None or row.ciphertext is None:
            raise SecretMissing()
        try:
            data_key = _master(row.master_key_id).decrypt(
                bytes(row.key_nonce), bytes(row.wrapped_key), _aad(path, version, b"key")
            )
            plain = AESGCM(data_key).decrypt(
                bytes(row.nonce), bytes(row.ciphertext), _aad(path, version, b"data")
            )
        except InvalidTag:
            raise SecretMissing("The stored secret does not decrypt for this key.") from None
        return plain.decode()

    def versions(self, path: str) -> list[VersionInfo]:
        rows = LocalSecret.objects.filter(path=path).order_by("version")
        return [VersionInfo(r.version, r.destroyed_at is not None) for r in rows]

    def destroy(self, path: str, versions: list[int]) -> None:
        LocalSecret.objects.filter(path=path, version__in=versions, destroyed_at=None).update(
            destroyed_at=timezone.now(), ciphertext=None, wrapped_key=b"", key_nonce=b"", nonce=b""
        )

    def purge(self, path: str) -> None:
        LocalSecret.objects.filter(path=path).delete()

    def health(self) -> bool:
        return bool(settings.MASTER_KEYS)


def rewrap_all(batch: int = 500) -> int:
    """Re-wrap every live data key under the newest master key; returns how many changed.

    Safe to run repeatedly and concurrently: each row is re-wrapped under a row lock and
    only if it is still under an older key."""
    newest = max(settings.MASTER_KEYS)
    changed = 0
    while True:
        with transaction.atomic():
            rows = list(
                LocalSecret.objects.select_for_update(skip_locked=True)
                .filter(destroyed_at=None)
                .exclude(master_key_id=newest)[:batch]
            )
            for row in rows:
                aad = _aad(row.path, row.version, b"key")
                data_key = _master(row.master_key_id).decrypt(
                    bytes(row.key_nonce), bytes(row.wrapped_key), aad
                )
                row.key_nonce = os.urandom(12)
                row.wrapped_key = _master(newest).encrypt(row.key_nonce, data_key, aad)
                row.master_key_id = newest
                row.save(update_fields=["key_nonce", "wrapped_key", "master_key_id"])
        changed += len(rows)
        if len(rows) < batch:
            return changed
