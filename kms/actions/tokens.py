"""Scoped tokens: issue, check, introspect, revoke, and exchange for a provider key.

Every check runs against the database on every use, so a revocation of the token, its key,
its grant or its principal, or a suspension of its tenant, holds on every replica at once.
Uses are counted with one conditional UPDATE, so `max_uses` holds under any concurrency.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.actors import Actor
from audit.recorder import probe, record, record_refusal, record_with
from core import metrics, sql
from core.errors import DomainError
from kms.actions.keys import read_secret
from kms.exceptions import (
    GrantMissing,
    InsufficientScope,
    KeyAmbiguous,
    KeyNotActive,
    KeyNotFound,
    KeyPolicyRefused,
    KeyVersionUnavailable,
    ModelNotAllowed,
    ModelNotGranted,
    ProviderMismatch,
    ResidencyRefused,
    TenantSuspended,
    TokenInactive,
    TtlTooLong,
)
from kms.keychoice import choose_key, source_of
from kms.models import KeyKind, ProviderKey, ScopedToken
from kms.providers import get_adapter
from kms.queries import in_grace, inactive_reason
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
    key_version: int | None = None
    models: list[str] | None = None


# -- issue -----------------------------------------------------------------------------
def do_issue_token(
    principal: ServicePrincipal, ask: TokenRequest, *, actor: Actor
) -> tuple[ScopedToken, str]:
    """A new token for `principal`, or a refusal that is audited as `token.denied`.

    This is the hottest write path, so it reads the tenant, the principal's candidate
    grants and the tenant's keys for the provider with one plain query, and inserts with
    one statement.
    """
    tenant, grants, candidates = _tenant_grants_and_keys(principal, ask)
    try:
        tenant, grant = _matching_grant(tenant, grants, ask)
        if tenant.status != TenantStatus.ACTIVE:
            raise TenantSuspended()
        chosen = choose_key(
            tenant,
            [k for k in candidates if k.tenant_id == tenant.id],
            [k for k in candidates if k.tenant_id != tenant.id],
            ask.key,
        )
        key = chosen.key
        _check_pin(key, ask.key_version)
        ttl = _ttl(ask.ttl_seconds, grant)
        allowed = _models(ask.models, grant)
    except (
        GrantMissing,
        TenantSuspended,
        KeyNotActive,
        KeyNotFound,
        KeyAmbiguous,
        KeyVersionUnavailable,
        KeyPolicyRefused,
        ResidencyRefused,
        TtlTooLong,
        ModelNotGranted,
    ) as refusal:
        _deny(refusal, actor, tenant, ask)
        metrics.TOKENS_ISSUED.labels(refusal.code).inc()
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
        key_version=ask.key_version,
        scopes=sorted(set(ask.scopes)),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        max_uses=ask.max_uses,
        uses=0,
        allowed_models=allowed,
    )
    record_with(
        _INSERT_TOKEN,
        [sql.Value(f, getattr(token, f.attname)) for f in _TOKEN_COLUMNS.fields],
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
            "models": allowed,
            "grant": str(grant.id),
            "credential_source": chosen.source.value,
        },
    )
    token._state.adding = False
    metrics.TOKENS_ISSUED.labels("issued").inc()
    return token, minted.plaintext


_TOKEN_COLUMNS = sql.Columns(list(ScopedToken._meta.concrete_fields))
_INSERT_TOKEN = (
    "INSERT INTO kms_scopedtoken ("
    + ", ".join(_TOKEN_COLUMNS.names())
    + ") VALUES ("
    + ", ".join(["%s"] * len(_TOKEN_COLUMNS))
    + ")"
)


_TENANT = sql.Columns.of(
    Tenant, ["id", "slug", "status", "is_platform", "key_policy", "platform_fallback", "store"]
)
_GRANT = sql.Columns.of(Grant, ["id", "scopes", "max_ttl_seconds", "allowed_models", "created_at"])
_KEY = sql.Columns.of(
    ProviderKey,
    ["id", "tenant", "provider", "label", "status", "current_version", "store", "created_at"],
)
# One round trip: the tenant, the principal's grants that could cover it (LEFT JOIN: none
# is a refusal, not an empty result), and the tenant's and the platform's keys for the
# provider. Grants and keys are few, so their cross product is small.
_TENANT_GRANTS_KEYS = (
    "SELECT "
    + ", ".join(_TENANT.names("n") + _GRANT.names("g") + _KEY.names("k"))
    + " FROM tenants_tenant n"
    " LEFT JOIN tenants_grant g ON g.principal_id = %s"
    " AND (g.tenant_id = n.id OR g.tenant_id IS NULL) AND g.provider IN (%s, '*')"
    " LEFT JOIN kms_providerkey k ON k.provider = %s AND k.kind = %s AND k.tenant_id IN"
    " (n.id, (SELECT p.id FROM tenants_tenant p WHERE p.is_platform = %s))"
    " WHERE n.slug = %s"
)
_ROW = _TENANT + _GRANT + _KEY


def _tenant_grants_and_keys(
    principal: ServicePrincipal, ask: TokenRequest
) -> tuple[Tenant | None, list[Grant], list[ProviderKey]]:
    """The tenant named by the request, the principal's grants that could cover it, and
    the tenant's and the platform's keys for the provider, oldest first."""
    rows = sql.fetch(
        _TENANT_GRANTS_KEYS,
        # Admin credentials are never released or proxied: no token can name one.
        [
            sql.param(Grant, "principal", principal.id),
            ask.provider,
            ask.provider,
            KeyKind.API_KEY.value,
            sql.param(Tenant, "is_platform", True),
            ask.tenant,
        ],
        _ROW,
    )
    if not rows:
        return None, [], []
    t, g = len(_TENANT), len(_TENANT) + len(_GRANT)
    tenant = sql.instance(Tenant, _TENANT, rows[0][:t])
    grants = {row[t]: sql.instance(Grant, _GRANT, row[t:g]) for row in rows if row[t] is not None}
    keys = {row[g]: sql.instance(ProviderKey, _KEY, row[g:]) for row in rows if row[g] is not None}
    return tenant, list(grants.values()), sorted(keys.values(), key=lambda k: k.created_at)


def _matching_grant(
    tenant: Tenant | None, grants: list[Grant], ask: TokenRequest
) -> tuple[Tenant, Grant]:
    matching = [g for g in grants if set(ask.scopes) <= set(g.scopes)]
    # The platform tenant's keys serve other tenants; it is never a token's own tenant.
    if tenant is None or tenant.is_platform or not matching:
        raise GrantMissing()
    return tenant, max(matching, key=lambda g: (g.max_ttl_seconds, g.created_at))


def _check_pin(key: ProviderKey, version: int | None) -> None:
    """A pinned version must be usable now: current, or previous within its grace."""
    if version is None or version == key.current_version:
        return
    if not in_grace(key, version, timezone.now()):
        raise KeyVersionUnavailable()


def _models(asked: list[str] | None, grant: Grant) -> list[str]:
    """The models the token may name: those asked for, all of which the grant must allow,
    or the grant's own list (empty: any)."""
    if not asked:
        return list(grant.allowed_models)
    if grant.allowed_models and not set(asked) <= set(grant.allowed_models):
        raise ModelNotGranted()
    return sorted(set(asked))


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
    try:
        released = _release(token, actor)
    except DomainError as refusal:
        metrics.EXCHANGES.labels(refusal.code).inc()
        raise
    metrics.EXCHANGES.labels("released").inc()
    return released


def _release(token: ScopedToken, actor: Actor) -> dict[str, Any]:
    _check_use(token, "release", actor)
    key = token.provider_key
    version = key.current_version if token.key_version is None else token.key_version
    secret = read_secret(
        key, version, actor=actor, purpose="credential.release", tenant=token.tenant.slug
    )
    try:
        _count_use_and_record(token, key, version, actor)
    except TokenInactive as refusal:
        _refuse_use(refusal, token, refusal.audit_reason, actor)
        raise
    return {
        "provider": key.provider,
        "api_key": secret,
        "base_url": get_adapter(key.provider).base_url(key.base_url),
        "key_id": str(key.id),
        "key_version": version,
        "expires_at": token.expires_at,
        "credential_source": source_of(token.tenant, key).value,
    }


def _check_use(token: ScopedToken, scope: str, actor: Actor) -> None:
    """Refuse, audited as `credential.denied`, a token without `scope` or no longer active."""
    reason = "insufficient_scope" if scope not in token.scopes else inactive_reason(token)
    if reason is not None:
        refusal = InsufficientScope() if reason == "insufficient_scope" else TokenInactive(reason)
        _refuse_use(refusal, token, reason, actor)
        raise refusal


@dataclass(frozen=True)
class ProxyCall:
    """One proxied call a `proxy` token may make: where to, with which key (never shown in
    a repr), and what its audit event names."""

    provider: str
    base_url: str
    tenant: str
    key_id: str
    key_version: int
    token_id: str
    principal: str
    models: tuple[str, ...]
    credential_source: str
    secret: str = field(repr=False)

    def allows(self, model: str | None) -> bool:
        """A body that names no model, or a model the token allows (no list: any)."""
        return not self.models or model is None or model in self.models


def do_open_proxy_call(token: ScopedToken, provider: str, *, actor: Actor) -> ProxyCall:
    """Check a `proxy` token for a call to `provider` and count the use (under `max_uses`,
    by the same conditional UPDATE as an exchange); the call's event is written when it
    ends (`do_record_proxy_call`), so the call is refused (AuditUnavailable, 503) unless
    an event could be written now. Refusals are audited as `credential.denied`."""
    _check_use(token, "proxy", actor)
    key = token.provider_key
    if key.provider != provider:
        mismatch = ProviderMismatch()
        _refuse_use(mismatch, token, "provider_mismatch", actor)
        raise mismatch
    version = key.current_version if token.key_version is None else token.key_version
    probe()  # the event is written when the call ends: none starts while the log is down
    call_tenant = token.tenant.slug
    if token.max_uses is not None and not _count_use(token):
        used_up = TokenInactive("used_up")
        _refuse_use(used_up, token, "used_up", actor)
        raise used_up
    secret = read_secret(key, version, actor=actor, purpose="proxy.request", tenant=call_tenant)
    return ProxyCall(
        provider=key.provider,
        base_url=get_adapter(key.provider).proxy_base(key.base_url),
        tenant=token.tenant.slug,
        key_id=str(key.id),
        key_version=version,
        token_id=str(token.id),
        principal=str(token.principal_id),
        models=tuple(token.allowed_models),
        credential_source=source_of(token.tenant, key).value,
        secret=secret,
    )


def do_check_proxy_model(call: ProxyCall, model: str | None, *, actor: Actor) -> None:
    """Refuse, audited, a call whose JSON body names a model the token does not allow."""
    if not call.allows(model):
        refusal = ModelNotAllowed()
        record_refusal(
            "credential.denied",
            actor=actor,
            tenant=call.tenant,
            target=f"token:{call.token_id}",
            details={
                "reason": "model_not_allowed",
                "principal": call.principal,
                "model": model,
                "credential_source": call.credential_source,
            },
            refusal=refusal,
        )
        raise refusal


def do_record_proxy_call(call: ProxyCall, outcome: dict[str, Any], *, actor: Actor) -> None:
    """The `proxy.request` event of a call that ended: `outcome` holds the method, the path
    (no query), the model, the upstream status, the latency and the usage; never a body,
    a header or the key."""
    record("proxy.request", actor=actor, **proxy_event(call, outcome))


def proxy_event(call: ProxyCall, outcome: dict[str, Any]) -> dict[str, Any]:
    """The `proxy.request` event of a call, but for its actor."""
    status = outcome.get("upstream_status")
    return {
        "tenant": call.tenant,
        "target": f"key:{call.key_id}",
        "outcome": "success" if isinstance(status, int) and status < 400 else "error",
        "details": {
            "principal": call.principal,
            "token_id": call.token_id,
            "key_id": call.key_id,
            "key_version": call.key_version,
            "provider": call.provider,
            "credential_source": call.credential_source,
            **outcome,
        },
    }


COUNT_USE = (
    "UPDATE kms_scopedtoken SET uses = uses + 1 WHERE id = %s AND revoked_at IS NULL"
    " AND expires_at > %s AND (max_uses IS NULL OR uses < max_uses)"
)


def _count_use(token: ScopedToken) -> bool:
    """One use of a token with `max_uses`; False when it has none left (or expired, or was
    revoked), whatever the concurrency."""
    return bool(sql.execute(COUNT_USE, count_use_params(token)))


def count_use_params(token: ScopedToken) -> list[sql.Param]:
    return [
        sql.param(ScopedToken, "id", token.pk),
        sql.param(ScopedToken, "expires_at", timezone.now()),
    ]


def _count_use_and_record(token: ScopedToken, key: ProviderKey, version: int, actor: Actor) -> None:
    """For a token with `max_uses`, one conditional UPDATE in the event's transaction: under
    any concurrency it is never used more often than that, nor after it expired or was
    revoked. A token without a use limit takes no row lock, so its exchanges never queue on
    each other, and its event commits on its own (one statement on PostgreSQL)."""
    if token.max_uses is None:
        _record_release(token, key, version, actor)
        return
    with transaction.atomic(durable=True):
        if not _count_use(token):
            raise TokenInactive("used_up")
        _record_release(token, key, version, actor)


def _record_release(token: ScopedToken, key: ProviderKey, version: int, actor: Actor) -> None:
    record(
        "credential.released",
        actor=actor,
        tenant=token.tenant.slug,
        target=f"key:{key.id}",
        details={
            "principal": str(token.principal_id),
            "token_id": str(token.id),
            "key_id": str(key.id),
            "key_version": version,
            "pinned": token.key_version is not None,
            "provider": key.provider,
            "credential_source": source_of(token.tenant, key).value,
        },
    )


def _refuse_use(refusal: DomainError, token: ScopedToken, reason: str, actor: Actor) -> None:
    record_refusal(
        "credential.denied",
        actor=actor,
        tenant=token.tenant.slug,
        target=f"token:{token.id}",
        details={
            "reason": reason,
            "principal": str(token.principal_id),
            "credential_source": source_of(token.tenant, token.provider_key).value,
        },
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
