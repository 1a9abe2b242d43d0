"""Where a tenant's new keys are written: a pinned tenant's only ever to its own store,
anyone else's to the store asked for, or the default one.

Pure decisions over a loaded tenant; the onboarding action audits a refusal, and checks
the tenant's pin again under its row lock before the key is registered.
"""

from __future__ import annotations

from core.errors import InvalidInput
from kms.exceptions import ResidencyRefused
from stores.registry import DEFAULT_STORE, store_names, store_region
from tenants.models import Tenant


def known_store(name: str, field: str = "store") -> str:
    """`name` if it is a configured store, else a 400 naming the configured ones."""
    if name not in store_names():
        raise InvalidInput(
            fields={field: [f"Unknown secret store; configured: {', '.join(store_names())}."]}
        )
    return name


def store_for_new_key(tenant: Tenant, asked: str = "") -> str:
    """The store a new key of `tenant` goes to. A pinned tenant's keys go to its store and
    naming another is refused; an unpinned tenant (and the platform tenant, whose keys are
    placed per region on purpose) may name any configured store."""
    if asked:
        known_store(asked)
    if not tenant.store:
        return asked or DEFAULT_STORE
    if asked and asked != tenant.store:
        raise ResidencyRefused(residency_message(tenant.store, asked))
    return tenant.store


def residency_message(pinned: str, asked: str) -> str:
    return (
        f"This tenant is pinned to the secret store {pinned!r} (region "
        f"{store_region(pinned)}); its keys are not written to {asked!r} (region "
        f"{store_region(asked)})."
    )
