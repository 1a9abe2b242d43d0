"""Scoped tokens: issue, check, introspect, revoke, and exchange for a provider key.

Every check runs against the database on every use, so a revocation of the token, its key,
its grant or its principal, or a suspension of its tenant, holds on every replica at once.
Uses are counted with one conditional UPDATE, so `max_uses` holds under any concurrency.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.recorder import record, record_refusal
from core.errors import DomainError
from kms.actions.keys import read_secret
from kms.exceptions import (
    GrantMissing,
    InsufficientScope,
    KeyAmbiguous,
    KeyNotActive,
    KeyNotFound,
    TenantSuspended,
    TokenInactive,
    TtlTooLong,
)
from kms.models import KeyStatus, ProviderKey, ScopedToken
from kms.providers import get_adapter
from kms.queries import inactive_reason, json_list, ordered_fields
from kms.ratelimit import purge_expired_counters
from tenants import credentials
from tenants.models import Grant, ServicePrincipal, Tenant, TenantStatus


@dataclass(frozen=True)
class TokenRequest:
    tenant: str
    provider: str
    scopes: list[str]
    key: str = ""
    ttl_seconds: int | None = None
    max_uses: int | None = None


# -- issue -----------------------------------------------------------------------------
def do_issue_token(
    principal: ServicePrincipal, ask: TokenRequest, *, actor: Actor
) -> tuple[ScopedToken, str]:
    """A new token for `principal`, or a refusal that is audited as `token.denied`.

    This is the hottest write path, so it reads with two plain queries (tenant with the
    principal's candidate grants; the tenant's keys for the provider) and inserts with one.
    """
    tenant, grants = _tenant_and_grants(principal, ask)
    try:
        tenant, grant = _matching_grant(tenant, grants, ask)
        if tenant.status != TenantStatus.ACTIVE:
            raise TenantSuspended()
        key = _pick_key(tenant, ask.provider, ask.key)
        ttl = _ttl(ask.ttl_seconds, grant)
    except (
        GrantMissing,
        TenantSuspended,
        KeyNotActive,
        KeyNotFound,
        KeyAmbiguous,
        TtlTooLong,
    ) as refusal:
        _deny(refusal, actor, tenant, ask)
        raise
    minted = credentials.mint(credentials.TOKEN_PREFIX)
    now = timezone.now()
    token = ScopedToken(
        id=uuid.uuid4(),
        key_id=minted.key_id,
        digest=minted.digest,
        pepper_id=minted.pepper_id,
        principal=principal,
        grant=grant,
        tenant=tenant,
        provider_key=key,
        key_version=key.current_version,
        scopes=sorted(set(ask.scopes)),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        max_uses=ask.max_uses,
        uses=0,
    )
    with transaction.atomic(durable=True):
        _insert_token(token)
        record(
            "token.issued",
            actor=actor,
            tenant=tenant.slug,
            target=f"token:{token.id}",
            details={
                "token_id": str(token.id),
                "key_id": str(key.id),
                "key_version": token.key_version,
                "provider": key.provider,
                "scopes": token.scopes,
                "ttl_seconds": ttl,
                "max_uses": ask.max_uses,
                "grant": str(grant.id),
            },
        )
    return token, minted.plaintext


_INSERT_TOKEN = (
    "INSERT INTO kms_scopedtoken (id, key_id, digest, pepper_id, principal_id, grant_id, tenant_id,"
    " provider_key_id, key_version, scopes, created_at, expires_at, max_uses, uses)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0)"
)


def _insert_token(token: ScopedToken) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_TOKEN,
            [
                token.id,
                token.key_id,
                token.digest,
                token.pepper_id,
                token.principal_id,
                token.grant_id,
                token.tenant_id,
                token.provider_key_id,
                token.key_version,
                json.dumps(token.scopes),
                token.created_at,
                token.expires_at,
                token.max_uses,
            ],
        )
    token._state.adding = False


_PICK_FIELDS = ordered_fields(
    ProviderKey, {"id", "tenant_id", "provider", "label", "status", "current_version", "created_at"}
)
_KEYS_FOR = (
    f"SELECT {', '.join(_PICK_FIELDS)} FROM kms_providerkey WHERE tenant_id = %s AND provider = %s"
    " ORDER BY created_at"
)
_GRANT_FIELDS = ("id", "scopes", "max_ttl_seconds", "created_at")
# Built once from constant column names; every value goes in as a parameter.
_TENANT_AND_GRANTS = (
    "SELECT n.id, n.slug, n.status, "
    + ", ".join(f"g.{f}" for f in _GRANT_FIELDS)
    + " FROM tenants_tenant n LEFT JOIN tenants_grant g ON g.principal_id = %s"
    " AND (g.tenant_id = n.id OR g.tenant_id IS NULL) AND g.provider IN (%s, '*')"
    " WHERE n.slug = %s"
)


def _tenant_and_grants(
    principal: ServicePrincipal, ask: TokenRequest
) -> tuple[Tenant | None, list[Grant]]:
    """The tenant named by the request, and the principal's grants that could cover it."""
    with connection.cursor() as cursor:
        cursor.execute(_TENANT_AND_GRANTS, [principal.id, ask.provider, ask.tenant])
        rows = cursor.fetchall()
    if not rows:
        return None, []
    tenant = Tenant.from_db(
        "default", list(ordered_fields(Tenant, {"id", "slug", "status"})), list(rows[0][:3])
    )
    grant_fields = list(ordered_fields(Grant, set(_GRANT_FIELDS)))
    grants = []
    for row in rows:
        if row[3] is None:
            continue
        by_name = dict(zip(_GRANT_FIELDS, row[3:], strict=True))
        by_name["scopes"] = json_list(by_name["scopes"])
        grants.append(Grant.from_db("default", grant_fields, [by_name[f] for f in grant_fields]))
    return tenant, grants


def _matching_grant(
    tenant: Tenant | None, grants: list[Grant], ask: TokenRequest
) -> tuple[Tenant, Grant]:
    matching = [g for g in grants if set(ask.scopes) <= set(g.scopes)]
    if tenant is None or not matching:
        raise GrantMissing()
    return tenant, max(matching, key=lambda g: (g.max_ttl_seconds, g.created_at))


def _pick_key(tenant: Tenant, provider: str, ref: str) -> ProviderKey:
    """The key a token request names (by id or label), or the tenant's only active key for
    the provider."""
    fields = list(_PICK_FIELDS)
    with connection.cursor() as cursor:
        cursor.execute(_KEYS_FOR, [tenant.id, provider])
        keys = [ProviderKey.from_db("default", fields, list(row)) for row in cursor.fetchall()]
    if ref:
        chosen = [k for k in keys if str(k.id) == ref] or [
            k for k in keys if k.label == ref and k.status != KeyStatus.REVOKED
        ]
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


def _ttl(asked: int | None, grant: Grant) -> int:
    cap = min(grant.max_ttl_seconds, settings.TOKEN_MAX_TTL)
    if asked is None:
        return min(settings.TOKEN_DEFAULT_TTL, cap)
    if asked > cap:
        raise TtlTooLong(f"The TTL may be at most {cap} seconds.", max_ttl_seconds=cap)
    return asked


def _deny(refusal: DomainError, actor: Actor, tenant: Tenant | None, ask: TokenRequest) -> None:
    record_refusal(
        "token.denied",
        actor=actor,
        tenant=tenant.slug if tenant else None,
        details={
            "reason": refusal.code,
            "tenant": ask.tenant[:63],
            "provider": ask.provider[:32],
            "scopes": ask.scopes,
            "key": ask.key[:100],
            "ttl_seconds": ask.ttl_seconds,
        },
        refusal=refusal,
    )


# -- revocation ----------------------------------------------------------------------------
def do_revoke_token(token: ScopedToken, *, actor: Actor) -> bool:
    """Revoke at once; True if this call revoked it, False if it already was."""
    with transaction.atomic(durable=True):
        changed = ScopedToken.objects.filter(pk=token.pk, revoked_at=None).update(
            revoked_at=timezone.now()
        )
        if changed:
            record(
                "token.revoked",
                actor=actor,
                tenant=token.tenant.slug,
                target=f"token:{token.id}",
                details={"token_id": str(token.id), "principal": str(token.principal_id)},
            )
    return bool(changed)


# -- exchange --------------------------------------------------------------------------
def do_exchange(token: ScopedToken, *, actor: Actor) -> dict[str, Any]:
    """Release the key version a `release` token is bound to, counting one use. Refusals
    are audited as `credential.denied`."""
    reason = "insufficient_scope" if "release" not in token.scopes else inactive_reason(token)
    if reason is not None:
        refusal = InsufficientScope() if reason == "insufficient_scope" else TokenInactive(reason)
        _refuse_use(refusal, token, reason, actor)
        raise refusal
    key = token.provider_key
    secret = read_secret(key, token.key_version, actor=actor, purpose="credential.release")
    try:
        _count_use_and_record(token, key, actor)
    except TokenInactive as refusal:
        _refuse_use(refusal, token, refusal.audit_reason, actor)
        raise
    return {
        "provider": key.provider,
        "api_key": secret,
        "base_url": get_adapter(key.provider).base_url(key.base_url),
        "key_id": str(key.id),
        "key_version": token.key_version,
        "expires_at": token.expires_at,
    }


_COUNT_USE = (
    "UPDATE kms_scopedtoken SET uses = uses + 1 WHERE id = %s AND revoked_at IS NULL"
    " AND expires_at > %s AND (max_uses IS NULL OR uses < max_uses)"
)


def _count_use_and_record(token: ScopedToken, key: ProviderKey, actor: Actor) -> None:
    """One conditional UPDATE: under any concurrency a token is never used more often than
    `max_uses`, and never after it expired or was revoked."""
    with transaction.atomic(durable=True):
        with connection.cursor() as cursor:
            cursor.execute(_COUNT_USE, [token.pk, timezone.now()])
            counted = cursor.rowcount
        if not counted:
            raise TokenInactive("used_up")
        record(
            "credential.released",
            actor=actor,
            tenant=token.tenant.slug,
            target=f"key:{key.id}",
            details={
                "principal": str(token.principal_id),
                "token_id": str(token.id),
                "key_id": str(key.id),
                "key_version": token.key_version,
                "provider": key.provider,
            },
        )


def _refuse_use(refusal: DomainError, token: ScopedToken, reason: str, actor: Actor) -> None:
    record_refusal(
        "credential.denied",
        actor=actor,
        tenant=token.tenant.slug,
        target=f"token:{token.id}",
        details={"reason": reason, "principal": str(token.principal_id)},
        refusal=refusal,
    )


# -- clean-up --------------------------------------------------------------------------------
def do_purge_expired_tokens(older_than: timedelta, *, actor: Actor) -> int:
    """Delete token rows that expired (or were revoked) more than `older_than` ago, and
    database rate-limit counters whose window has passed; returns how many tokens went.
    Audit events are never touched."""
    cutoff = timezone.now() - older_than
    with transaction.atomic(durable=True):
        expired, _ = ScopedToken.objects.filter(expires_at__lt=cutoff).delete()
        revoked, _ = ScopedToken.objects.filter(revoked_at__lt=cutoff).delete()
        if expired or revoked:
            record(
                "token.purged",
                actor=actor,
                details={"expired": expired, "revoked": revoked, "before": cutoff.isoformat()},
            )
    purge_expired_counters()
    return expired + revoked
