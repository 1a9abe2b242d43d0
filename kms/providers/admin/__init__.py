"""Admin API adapters, one module per provider, for rotations that reach the provider:
`admin_adapter(provider)` (None where Keyward knows no admin API for it)."""

from __future__ import annotations

from kms.providers.admin.base import AdminAdapter, AdminCredential, AdminError, Minted

__all__ = ["ADMIN_ADAPTERS", "AdminAdapter", "AdminCredential", "AdminError", "Minted"]

ADMIN_ADAPTERS: dict[str, AdminAdapter] = {}


def admin_adapter(provider: str) -> AdminAdapter | None:
    return ADMIN_ADAPTERS.get(provider)
