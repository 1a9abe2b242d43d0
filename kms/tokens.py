"""Scoped tokens: issue, check, introspect, revoke, and exchange for a provider key.

Every check runs against the database on every use, so a revocation of the token, its key,
its grant or its principal, or a suspension of its tenant, holds on every replica at once.
Uses are counted with one conditional UPDATE, so `max_uses` holds under any concurrency.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.models import Outcome as AuditOutcome
from audit.recorder import record
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
from kms.keys import read_secret
from kms.models import KeyStatus, KeyVersion, ProviderKey, ScopedToken, Stage
from kms.providers import get_adapter
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
def do_issue_token(principal: ServicePrincipal, ask: TokenRequest) -> tuple[ScopedToken, str]:
    """A new token for `principal`, or a refusal that is audited as `token.denied`.

    This is the hottest write path, so it reads with two plain queries (tenant with the
    principal's candidate grants; the tenant's keys for the provider) and inserts with one.
    """
    actor = Actor("principal", str(principal.id))
    tenant, grants = _tenant_and_grants(principal, ask)
    try:
        grant = _matching_grant(tenant, grants, ask)
        assert tenant is not None
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
        _deny(actor, tenant, ask, refusal.code)
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


def _ordered(model: Any, wanted: set[str]) -> tuple[str, ...]:
    """Column names in the model's concrete-field order, the order `from_db` expects."""
    return tuple(f.attname for f in model._meta.concrete_fields if f.attname in wanted)


_PICK_FIELDS = _ordered(
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
        "default", list(_ordered(Tenant, {"id", "slug", "status"})), list(rows[0][:3])
    )
    grant_fields = list(_ordered(Grant, set(_GRANT_FIELDS)))
    grants = []
    for row in rows:
        if row[3] is None:
            continue
        by_name = dict(zip(_GRANT_FIELDS, row[3:], strict=True))
        by_name["scopes"] = _json_list(by_name["scopes"])
        grants.append(Grant.from_db("default", grant_fields, [by_name[f] for f in grant_fields]))
    return tenant, grants


def _matching_grant(tenant: Tenant | None, grants: list[Grant], ask: TokenRequest) -> Grant:
    matching = [g for g in grants if set(ask.scopes) <= set(g.scopes)]
    if tenant is None or not matching:
        raise GrantMissing()
    return max(matching, key=lambda g: (g.max_ttl_seconds, g.created_at))


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


def _deny(actor: Actor, tenant: Tenant | None, ask: TokenRequest, reason: str) -> None:
    with transaction.atomic():
        record(
            "token.denied",
            actor=actor,
            tenant=tenant.slug if tenant else None,
            outcome=AuditOutcome.DENIED,
            details={
                "reason": reason,
                "tenant": ask.tenant[:63],
                "provider": ask.provider[:32],
                "scopes": ask.scopes,
                "key": ask.key[:100],
                "ttl_seconds": ask.ttl_seconds,
            },
        )


# -- state -----------------------------------------------------------------------------
def inactive_reason(token: ScopedToken, now: datetime | None = None) -> str | None:
    """Why a token does not work now, or None. Principal and grant deletions cascade to
    the token row itself, so they need no check here."""
    now = now or timezone.now()
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at <= now:
        return "expired"
    if token.max_uses is not None and token.uses >= token.max_uses:
        return "used_up"
    if token.tenant.status != TenantStatus.ACTIVE:
        return "tenant_suspended"
    key = token.provider_key
    if key.status != KeyStatus.ACTIVE:
        return "key_not_active"
    if token.key_version != key.current_version and not _in_grace(key, token.key_version, now):
        return "key_version_retired"
    return None


def _in_grace(key: ProviderKey, version: int, now: datetime) -> bool:
    return KeyVersion.objects.filter(
        key=key, version=version, stage=Stage.PREVIOUS, retire_after__gt=now
    ).exists()


_TOKEN_FIELDS = _ordered(ScopedToken, {f.attname for f in ScopedToken._meta.concrete_fields})
_TENANT_FIELDS = _ordered(Tenant, {"id", "slug", "status"})
_KEY_FIELDS = _ordered(
    ProviderKey,
    {
        "id",
        "tenant_id",
        "provider",
        "label",
        "status",
        "current_version",
        "base_url",
        "store",
        "store_path",
    },
)
_PRINCIPAL_FIELDS = _ordered(ServicePrincipal, {"id", "name", "key_id"})
_LOAD_TOKEN = (
    "SELECT "
    + ", ".join(
        [f"t.{f}" for f in _TOKEN_FIELDS]
        + [f"n.{f}" for f in _TENANT_FIELDS]
        + [f"k.{f}" for f in _KEY_FIELDS]
        + [f"p.{f}" for f in _PRINCIPAL_FIELDS]
    )
    + " FROM kms_scopedtoken t JOIN tenants_tenant n ON n.id = t.tenant_id"
    " JOIN kms_providerkey k ON k.id = t.provider_key_id"
    " JOIN tenants_serviceprincipal p ON p.id = t.principal_id WHERE t.key_id = %s"
)


def load_token(key_id: str) -> ScopedToken | None:
    """A token with its tenant, key and principal in one plain query. This runs on every
    token-authenticated request; the fields not loaded here stay deferred (read on access),
    so nothing sees a default in place of a stored value."""
    with connection.cursor() as cursor:
        cursor.execute(_LOAD_TOKEN, [key_id])
        row = cursor.fetchone()
    if row is None:
        return None
    a, b, c = len(_TOKEN_FIELDS), len(_TENANT_FIELDS), len(_KEY_FIELDS)
    values = list(row[:a])
    values[_TOKEN_FIELDS.index("scopes")] = _json_list(values[_TOKEN_FIELDS.index("scopes")])
    token = ScopedToken.from_db("default", list(_TOKEN_FIELDS), values)
    token.tenant = Tenant.from_db("default", list(_TENANT_FIELDS), list(row[a : a + b]))
    token.provider_key = ProviderKey.from_db(
        "default", list(_KEY_FIELDS), list(row[a + b : a + b + c])
    )
    token.principal = ServicePrincipal.from_db(
        "default", list(_PRINCIPAL_FIELDS), list(row[a + b + c :])
    )
    return token


def _json_list(value: Any) -> list[str]:
    loaded = json.loads(value) if isinstance(value, str | bytes) else value
    return [str(v) for v in loaded]


def find_token(plaintext: str) -> ScopedToken | None:
    """The token a presented `kwt_` string names, if its secret matches."""
    parsed = credentials.parse(plaintext)
    if parsed is None or parsed.prefix != credentials.TOKEN_PREFIX:
        return None
    try:
        return credentials.verify(ScopedToken, parsed, lookup=load_token)
    except credentials.Rejected:
        return None


# -- introspection and revocation --------------------------------------------------------
def introspect(token: ScopedToken | None, *, may_see: bool) -> dict[str, Any]:
    """RFC 7662: everything about an active token the caller may see; else only
    `active: false`."""
    if token is None or not may_see or inactive_reason(token) is not None:
        return {"active": False}
    return {
        "active": True,
        "token_type": "Bearer",
        "scope": " ".join(token.scopes),
        "client_id": str(token.principal_id),
        "sub": str(token.principal_id),
        "iat": int(token.created_at.timestamp()),
        "exp": int(token.expires_at.timestamp()),
        "token_id": str(token.id),
        "tenant": token.tenant.slug,
        "provider": token.provider_key.provider,
        "key_id": str(token.provider_key_id),
        "key_version": token.key_version,
        "uses": token.uses,
        "max_uses": token.max_uses,
    }


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
def do_exchange(token: ScopedToken) -> dict[str, Any]:
    """Release the key version a `release` token is bound to, counting one use. Refusals
    are audited as `credential.denied`."""
    actor = Actor("token", str(token.id))
    reason = "insufficient_scope" if "release" not in token.scopes else inactive_reason(token)
    if reason is not None:
        record_token_refusal(token, reason, "credential.denied")
        raise InsufficientScope() if reason == "insufficient_scope" else TokenInactive(reason)
    key = token.provider_key
    secret = read_secret(key, token.key_version, actor=actor, purpose="credential.release")
    try:
        _count_use_and_record(token, key, actor)
    except TokenInactive as refusal:
        record_token_refusal(token, refusal.audit_reason, "credential.denied")
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


def record_token_refusal(token: ScopedToken, reason: str, action: str = "token.denied") -> None:
    with transaction.atomic():
        record(
            action,
            actor=Actor("token", str(token.id)),
            tenant=token.tenant.slug,
            target=f"token:{token.id}",
            outcome=AuditOutcome.DENIED,
            details={"reason": reason, "principal": str(token.principal_id)},
        )
