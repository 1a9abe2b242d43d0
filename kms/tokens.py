"""Scoped tokens: issue, check, introspect, revoke, and exchange for a provider key.

Every check runs against the database on every use, so a revocation of the token, its key,
its grant or its principal, or a suspension of its tenant, holds on every replica at once.
Uses are counted with one conditional UPDATE, so `max_uses` holds under any concurrency.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
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
    """A new token for `principal`, or a refusal that is audited as `token.denied`."""
    actor = Actor("principal", str(principal.id))
    tenant = Tenant.objects.filter(slug=ask.tenant).first()
    try:
        grant = _matching_grant(principal, tenant, ask)
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
    with transaction.atomic(durable=True):
        token = ScopedToken.objects.create(
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
        )
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


def _matching_grant(principal: ServicePrincipal, tenant: Tenant | None, ask: TokenRequest) -> Grant:
    if tenant is None:
        raise GrantMissing()
    grants = Grant.objects.filter(
        Q(tenant=tenant) | Q(tenant__isnull=True),
        principal=principal,
        provider__in=(ask.provider, "*"),
    )
    matching = [g for g in grants if g.covers(tenant, ask.provider, ask.scopes)]
    if not matching:
        raise GrantMissing()
    return max(matching, key=lambda g: (g.max_ttl_seconds, g.created_at))


def _pick_key(tenant: Tenant, provider: str, ref: str) -> ProviderKey:
    keys = ProviderKey.objects.filter(tenant=tenant, provider=provider)
    if ref:
        try:
            keys = keys.filter(id=uuid.UUID(ref))
        except ValueError:
            keys = keys.filter(label=ref).exclude(status=KeyStatus.REVOKED)
        key = keys.first()
        if key is None:
            raise KeyNotFound()
        if key.status != KeyStatus.ACTIVE:
            raise KeyNotActive()
        return key
    active = list(keys.filter(status=KeyStatus.ACTIVE)[:2])
    if len(active) > 1:
        raise KeyAmbiguous()
    if not active:
        raise KeyNotActive() if keys.exists() else KeyNotFound()
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


def find_token(plaintext: str) -> ScopedToken | None:
    """The token a presented `kwt_` string names, if its secret matches."""
    parsed = credentials.parse(plaintext)
    if parsed is None or parsed.prefix != credentials.TOKEN_PREFIX:
        return None
    try:
        return credentials.verify(
            ScopedToken, parsed, ScopedToken.objects.select_related("tenant", "provider_key")
        )
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


def _count_use_and_record(token: ScopedToken, key: ProviderKey, actor: Actor) -> None:
    with transaction.atomic(durable=True):
        counted = ScopedToken.objects.filter(
            Q(max_uses__isnull=True) | Q(uses__lt=F("max_uses")),
            pk=token.pk,
            revoked_at=None,
            expires_at__gt=timezone.now(),
        ).update(uses=F("uses") + 1)
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
