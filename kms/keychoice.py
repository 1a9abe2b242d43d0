"""Which key a tenant's token uses: the tenant's own or the platform's, by the tenant's
key policy, and for a tenant pinned to a store, only a platform key of the same region.

Pure functions over rows already loaded: the token path reads the tenant, its keys and
the platform's keys for the provider in one query and decides here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kms.exceptions import (
    KeyAmbiguous,
    KeyNotActive,
    KeyNotFound,
    KeyPolicyRefused,
    ResidencyRefused,
)
from kms.models import KeyStatus, ProviderKey
from stores.registry import DEFAULT_STORE, store_region
from tenants.models import KeyPolicy, Tenant


class Source(StrEnum):
    """Whose key a token uses: the tenant's own, or the deployment's platform key."""

    TENANT = "tenant"
    PLATFORM = "platform"


@dataclass(frozen=True)
class Chosen:
    key: ProviderKey
    source: Source


def source_of(tenant: Tenant, key: ProviderKey) -> Source:
    """The `credential_source` of a token of `tenant` bound to `key`."""
    return Source.TENANT if key.tenant_id == tenant.id else Source.PLATFORM


def choose_key(
    tenant: Tenant, own: list[ProviderKey], platform: list[ProviderKey], ref: str = ""
) -> Chosen:
    """The key a token for `tenant` uses: the one `ref` names (id or label), or by default
    the tenant's one active key, or the platform's; each refusal names its reason."""
    source = _source(tenant, own)
    if source == Source.TENANT:
        # A platform key a request names is no key of this tenant's: not found, so that
        # its existence is not told.
        return Chosen(_pick(own, ref), source)
    if ref and _named_any(own, ref):
        if tenant.key_policy == KeyPolicy.PLATFORM_ONLY:
            raise KeyPolicyRefused(
                "This tenant's key policy (platform_only) uses the platform key for this "
                "provider, not the tenant's own."
            )
        # byok_preferred serves the platform's only while the tenant's own is not active:
        # the key named is the tenant's own, and it is refused as such, never swapped.
        raise KeyNotActive("The tenant's own key named is not active.")
    return Chosen(_pick_platform(tenant, platform, ref), source)


def _source(tenant: Tenant, own: list[ProviderKey]) -> Source:
    if tenant.key_policy == KeyPolicy.PLATFORM_ONLY:
        return Source.PLATFORM
    if tenant.key_policy != KeyPolicy.BYOK_PREFERRED:
        return Source.TENANT
    if any(k.status == KeyStatus.ACTIVE for k in own):
        return Source.TENANT
    if own and not tenant.platform_fallback:
        # The tenant brought a key that no longer works: say so, never switch silently.
        raise KeyNotActive(
            "The tenant's own key for this provider is not active, and its key policy does "
            "not fall back to the platform key."
        )
    return Source.PLATFORM


def _named(keys: list[ProviderKey], ref: str) -> list[ProviderKey]:
    """The key `ref` names: by id, or by the label of a key not revoked."""
    return [k for k in keys if str(k.id) == ref] or [
        k for k in keys if k.label == ref and k.status != KeyStatus.REVOKED
    ]


def _named_any(keys: list[ProviderKey], ref: str) -> bool:
    """`ref` names one of `keys`, by id or label, whatever its status."""
    return any(str(k.id) == ref or k.label == ref for k in keys)


def _pick(keys: list[ProviderKey], ref: str) -> ProviderKey:
    """The tenant key a request names, or its only active key for the provider."""
    if ref:
        chosen = _named(keys, ref)
        if not chosen:
            raise KeyNotFound()
        if chosen[0].status != KeyStatus.ACTIVE:
            raise KeyNotActive()
        return chosen[0]
    active = [k for k in keys if k.status == KeyStatus.ACTIVE]
    if len(active) > 1:
        raise KeyAmbiguous()
    if not active:
        raise KeyNotActive() if keys else KeyNotFound()
    return active[0]


def _pick_platform(tenant: Tenant, keys: list[ProviderKey], ref: str) -> ProviderKey:
    """The platform key a request names, or the oldest active one, in the tenant's region
    when the tenant is pinned to a store (`keys` come oldest first)."""
    if ref:
        keys = _named(keys, ref)[:1]
    active = [k for k in keys if k.status == KeyStatus.ACTIVE]
    if not active:
        if keys:
            raise KeyNotActive("The platform key for this provider is not active.")
        raise KeyNotFound("No platform key for this provider.")
    placed = [k for k in active if in_region(tenant, k)]
    if not placed and ref:
        raise ResidencyRefused(
            f"The platform key named is held in region {store_region(active[0].store)}, "
            f"not in the region of the tenant's store ({region_of(tenant)})."
        )
    if not placed:
        raise ResidencyRefused(
            "No platform key for this provider is held in the region of the tenant's store "
            f"({region_of(tenant)})."
        )
    return placed[0]


def region_of(tenant: Tenant) -> str:
    """The region of the store a tenant's keys are written to."""
    return store_region(tenant.store or DEFAULT_STORE)


def in_region(tenant: Tenant, key: ProviderKey) -> bool:
    """A key may serve `tenant`: any key serves an unpinned tenant; a pinned tenant only
    keys held in a store of its store's region."""
    return not tenant.store or store_region(key.store) == region_of(tenant)
