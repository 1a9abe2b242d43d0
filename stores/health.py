"""Readiness of the configured secret stores."""

from __future__ import annotations

from stores.registry import get_store, store_names


def secret_store_ready() -> bool:
    """Every configured store answers (a sealed or unreachable Vault does not)."""
    return all(get_store(name).health() for name in store_names())
