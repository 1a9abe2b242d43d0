"""Pinning a tenant to a secret store: where its keys are written from then on.

Pinning moves nothing: it is allowed at once only while the tenant has no live key in
another store (a key not revoked, or one whose secrets are not yet destroyed there).
Keys are moved between stores by a move of the tenant, never by pinning.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q, QuerySet

from audit.actors import Actor
from audit.recorder import record, record_refusal
from kms.exceptions import PlatformTenantPinned, TenantHasKeys
from kms.models import KeyStatus, ProviderKey
from kms.placement import known_store
from stores.registry import DEFAULT_STORE, store_region
from tenants.models import Tenant


def live_keys(tenant: Tenant) -> QuerySet[ProviderKey]:
    """The tenant's keys that still hold a secret somewhere: not revoked, or revoked with
    its versions not yet destroyed in its store."""
    return ProviderKey.objects.filter(tenant=tenant).filter(
        ~Q(status=KeyStatus.REVOKED) | Q(secrets_destroyed_at=None)
    )


def do_pin_tenant_store(tenant: Tenant, store: str | None, *, actor: Actor) -> Tenant:
    """Pin `tenant` to the configured store `store`, or unpin it with None (its new keys
    then go to the default store unless one is named). An unpinned tenant may hold keys in
    any store, so unpinning never needs a move."""
    if tenant.is_platform:
        raise PlatformTenantPinned()
    wanted = known_store(store) if store is not None else ""
    with transaction.atomic(durable=True):
        # Onboarding takes the same row lock before it registers a key, so no key lands
        # in another store between this check and the pin.
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if wanted == locked.store:
            return locked
        elsewhere = sorted(
            set(live_keys(locked).exclude(store=wanted).values_list("store", flat=True))
            if wanted
            else ()
        )
        if not elsewhere:
            return _pin(locked, wanted, actor)
    refusal = TenantHasKeys(
        f"Tenant {tenant.slug} has live keys in the secret store(s) {', '.join(elsewhere)}; "
        f"move them first with POST /api/v1/tenants/{tenant.slug}/moves."
    )
    record_refusal(
        "tenant.store_pin_refused",
        actor=actor,
        tenant=tenant.slug,
        target=f"tenant:{tenant.slug}",
        details={"store": [locked.store or None, wanted], "keys_in": elsewhere},
        refusal=refusal,
    )
    raise refusal


def _pin(locked: Tenant, wanted: str, actor: Actor) -> Tenant:
    old = locked.store
    locked.store = wanted
    locked.save(update_fields=["store", "updated_at"])
    record(
        "tenant.store_pinned" if wanted else "tenant.store_unpinned",
        actor=actor,
        tenant=locked.slug,
        target=f"tenant:{locked.slug}",
        details={
            "store": [old or None, wanted or None],
            "region": [store_region(old or DEFAULT_STORE), store_region(wanted or DEFAULT_STORE)],
        },
    )
    return locked
