"""The Ed25519 key that signs export manifests: in Vault Transit under the `vault` store,
in the local store (encrypted like any secret) under `local`. Only the public key ever
leaves; it is published at /api/v1/audit/public-key and named by fingerprint in manifests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from stores.exceptions import SecretMissing, StoreConflict
from stores.registry import DEFAULT_STORE, get_store

LOCAL_PATH = "_keyward/audit-signing-key"
TRANSIT_KEY = "keyward-audit"


def fingerprint(public_pem: bytes) -> str:
    public = serialization.load_pem_public_key(public_pem)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class LocalSigner:
    def __init__(self) -> None:
        store = get_store(DEFAULT_STORE)
        try:
            seed = base64.b64decode(store.get(LOCAL_PATH, 1))
        except SecretMissing:
            new = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            with contextlib.suppress(StoreConflict):  # another process created it first
                store.put(LOCAL_PATH, base64.b64encode(new).decode(), expected_version=0)
            seed = base64.b64decode(store.get(LOCAL_PATH, 1))
        self._key = Ed25519PrivateKey.from_private_bytes(seed)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class TransitSigner:
    def __init__(self) -> None:
        # Imported here so that hvac is loaded only by deployments that use Vault.
        from stores.vault import VaultStore

        store = get_store(DEFAULT_STORE)
        if not isinstance(store, VaultStore):
            raise ImproperlyConfigured("Transit signing needs the default store to be Vault.")
        self._store = store

    def sign(self, data: bytes) -> bytes:
        return self._store.transit_sign(TRANSIT_KEY, data)

    def public_pem(self) -> bytes:
        raw = self._store.transit_public_key(TRANSIT_KEY)
        return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@lru_cache(maxsize=1)
def _signer(backend: str) -> LocalSigner | TransitSigner:
    return TransitSigner() if backend == "vault" else LocalSigner()


def signer() -> LocalSigner | TransitSigner:
    return _signer(settings.SECRET_STORES["default"]["backend"])


def reset() -> None:
    _signer.cache_clear()
