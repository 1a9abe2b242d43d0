"""The Ed25519 keys of the audit log, one per purpose: export manifests, and the
checkpoints of the chains' Merkle trees. In Vault Transit under the `vault` store, in the
local store (encrypted like any secret) under `local`. Only public keys ever leave: the
manifest key is published at /api/v1/audit/public-key and named by fingerprint in
manifests, the checkpoint key as a signed-note verifier key at /api/v1/audit/checkpoint."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from stores.exceptions import SecretMissing, StoreConflict
from stores.registry import DEFAULT_STORE, get_store

PUBLIC_KEY_SECONDS = 60.0
# purpose: (path in the local store, Transit key name)
KEYS = {
    "manifest": ("_keyward/audit-signing-key", "keyward-audit"),
    "checkpoint": ("_keyward/audit-checkpoint-key", "keyward-audit-checkpoint"),
}


def fingerprint(public_pem: bytes) -> str:
    public = serialization.load_pem_public_key(public_pem)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class LocalSigner:
    def __init__(self, path: str) -> None:
        store = get_store(DEFAULT_STORE)
        try:
            seed = base64.b64decode(store.get(path, 1))
        except SecretMissing:
            new = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            with contextlib.suppress(StoreConflict):  # another process created it first
                store.put(path, base64.b64encode(new).decode(), expected_version=0)
            seed = base64.b64decode(store.get(path, 1))
        self._key = Ed25519PrivateKey.from_private_bytes(seed)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_raw(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def public_pem(self) -> bytes:
        return _pem(self.public_raw())


class TransitSigner:
    def __init__(self, key: str) -> None:
        # Imported here so that hvac is loaded only by deployments that use Vault.
        from stores.vault import VaultStore

        store = get_store(DEFAULT_STORE)
        if not isinstance(store, VaultStore):
            raise ImproperlyConfigured("Transit signing needs the default store to be Vault.")
        self._store, self._key = store, key
        self._public: tuple[float, bytes] | None = None

    def sign(self, data: bytes) -> bytes:
        return self._store.transit_sign(self._key, data)

    def public_raw(self) -> bytes:
        """The public key, read from Transit at most once a minute: every checkpoint held
        is opened with it, and a signing run opens one per chain."""
        now = time.monotonic()
        if self._public is None or now - self._public[0] > PUBLIC_KEY_SECONDS:
            self._public = (now, self._store.transit_public_key(self._key))
        return self._public[1]

    def public_pem(self) -> bytes:
        return _pem(self.public_raw())


def _pem(raw: bytes) -> bytes:
    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@lru_cache(maxsize=4)
def _signer(backend: str, purpose: str) -> LocalSigner | TransitSigner:
    path, transit_key = KEYS[purpose]
    return TransitSigner(transit_key) if backend == "vault" else LocalSigner(path)


def signer() -> LocalSigner | TransitSigner:
    """The key that signs export manifests."""
    return _signer(settings.SECRET_STORES["default"]["backend"], "manifest")


def checkpoint_signer() -> LocalSigner | TransitSigner:
    """The key that signs the chains' checkpoints (the log's key in signed-note terms)."""
    return _signer(settings.SECRET_STORES["default"]["backend"], "checkpoint")


def reset() -> None:
    _signer.cache_clear()


@receiver(setting_changed)
def _reset(setting: str, **kwargs: Any) -> None:
    if setting == "SECRET_STORES":
        reset()
