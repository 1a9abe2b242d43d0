"""Creating and deleting grants. Deleting a grant deletes the tokens issued under it."""

from __future__ import annotations

from django.db import transaction

from audit.actors import Actor
from audit.recorder import record
from tenants.models import Grant, ServicePrincipal, Tenant


def do_create_grant(
    principal: ServicePrincipal,
    tenant: Tenant | None,
    provider: str,
    scopes: list[str],
    max_ttl_seconds: int,
    *,
    actor: Actor,
) -> Grant:
    with transaction.atomic(durable=True):
        grant = Grant.objects.create(
            principal=principal,
            tenant=tenant,
            provider=provider,
            scopes=sorted(set(scopes)),
            max_ttl_seconds=max_ttl_seconds,
            created_by=actor.id,
        )
        record(
            "grant.created",
            actor=actor,
            tenant=tenant.slug if tenant else None,
            target=f"grant:{grant.id}",
            details={
                "principal": str(principal.id),
                "principal_name": principal.name,
                "tenant": tenant.slug if tenant else "*",
                "provider": provider,
                "scopes": grant.scopes,
                "max_ttl_seconds": max_ttl_seconds,
            },
        )
    return grant


def do_delete_grant(grant: Grant, *, actor: Actor) -> int:
    """Delete a grant and every token issued under it; returns how many tokens went."""
    with transaction.atomic(durable=True):
        locked = (
            Grant.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=grant.pk)
        )
        tokens = locked.tokens.count()
        record(
            "grant.deleted",
            actor=actor,
            tenant=locked.tenant.slug if locked.tenant else None,
            target=f"grant:{locked.id}",
            details={"principal": str(locked.principal_id), "tokens_revoked": tokens},
        )
        locked.delete()
    return tokens
