"""The configured secret stores, by name. Every provider key records the store holding it."""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from stores.base import SecretStore, VersionInfo
from stores.exceptions import StoreUnavailable
from stores.local import LocalStore

__all__ = [
    "DEFAULT_STORE",
    "SecretStore",
    "VersionInfo",
    "aclose_stores",
    "get_store",
    "store_names",
    "store_region",
]

DEFAULT_STORE = "default"
logger = logging.getLogger(__name__)

_stores: dict[str, SecretStore] = {}
_lock = threading.Lock()


def _build(name: str, config: dict[str, Any]) -> SecretStore:
    backend = config.get("backend")
    if backend == "local":
        return LocalStore(name)
    if backend == "vault":
        # Imported here so that hvac is loaded only by deployments that use Vault.
        from stores.vault import VaultOptions, VaultStore

        return VaultStore(name, VaultOptions.from_mapping(config))
    raise ValueError(f"secret store {name!r}: unknown backend {backend!r}")


def store_names() -> list[str]:
    return sorted(settings.SECRET_STORES)


def store_region(name: str) -> str:
    """The region a store is declared in; a store declared in none is a region of its own."""
    region = settings.SECRET_STORES.get(name, {}).get("region")
    return str(region) if region else name


def get_store(name: str = DEFAULT_STORE) -> SecretStore:
    """The store called `name`, built once per process from settings.SECRET_STORES."""
    store = _stores.get(name)
    if store is not None:
        return store
    if name not in settings.SECRET_STORES:
        # A key or a tenant's pin names a store no longer configured: fail closed, as for
        # a store that does not answer, and say which.
        logger.error("secret store %r is not configured (KEYWARD_SECRET_STORES)", name[:63])
        raise StoreUnavailable(f"The secret store {name[:63]!r} is not configured.")
    with _lock:
        if name not in _stores:
            _stores[name] = _build(name, settings.SECRET_STORES[name])
        return _stores[name]


async def aclose_stores() -> None:
    """Close what the stores built so far hold open on the running event loop."""
    for store in list(_stores.values()):
        await store.aclose()


@receiver(setting_changed)
def _reset(setting: str, **kwargs: Any) -> None:
    if setting in ("SECRET_STORES", "MASTER_KEYS"):
        _stores.clear()
