"""Reads of keys and tokens. The token look-up runs on every token-authenticated request,
so it loads the token, its tenant, key and principal with one plain query."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Count, QuerySet
from django.utils import timezone

from kms.models import (
    KeyStatus,
    KeyVersion,
    ProviderKey,
    ScopedToken,
    Stage,
    ValidationResult,
)
from tenants import credentials
from tenants.models import ServicePrincipal, Tenant, TenantStatus


def ordered_fields(model: Any, wanted: set[str]) -> tuple[str, ...]:
    """Column names in the model's concrete-field order, the order `from_db` expects."""
    return tuple(f.attname for f in model._meta.concrete_fields if f.attname in wanted)


# -- keys ----------------------------------------------------------------------------------
def keys() -> QuerySet[ProviderKey]:
    """Keys with their tenant, for scoping and display."""
    return ProviderKey.objects.select_related("tenant")


def keys_with_versions() -> QuerySet[ProviderKey]:
    return keys().prefetch_related("versions")


def recent_validations(key: ProviderKey, limit: int = 50) -> QuerySet[ValidationResult]:
    """A key's latest validation results, newest first."""
    return key.validations.all()[:limit]


def key_counts_by_status() -> dict[str, int]:
    rows = ProviderKey.objects.values_list("status").annotate(n=Count("id"))
    return {str(status): int(n) for status, n in rows}


def live_token_count() -> int:
    return ScopedToken.objects.filter(revoked_at=None, expires_at__gt=timezone.now()).count()


def tokens() -> QuerySet[ScopedToken]:
    """Tokens with their tenant and key, for scoping and display."""
    return ScopedToken.objects.select_related("tenant", "provider_key")


def live_tokens(key: ProviderKey) -> QuerySet[ScopedToken]:
    """A key's tokens that are neither expired nor revoked, soonest to expire first."""
    return (
        key.tokens.select_related("tenant")
        .filter(revoked_at=None, expires_at__gt=timezone.now())
        .order_by("expires_at")
    )


# -- tokens --------------------------------------------------------------------------------
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


_TOKEN_FIELDS = ordered_fields(ScopedToken, {f.attname for f in ScopedToken._meta.concrete_fields})
_TENANT_FIELDS = ordered_fields(Tenant, {"id", "slug", "status"})
_KEY_FIELDS = ordered_fields(
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
_PRINCIPAL_FIELDS = ordered_fields(ServicePrincipal, {"id", "name", "key_id"})
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
    values[_TOKEN_FIELDS.index("scopes")] = json_list(values[_TOKEN_FIELDS.index("scopes")])
    token = ScopedToken.from_db("default", list(_TOKEN_FIELDS), values)
    token.tenant = Tenant.from_db("default", list(_TENANT_FIELDS), list(row[a : a + b]))
    token.provider_key = ProviderKey.from_db(
        "default", list(_KEY_FIELDS), list(row[a + b : a + b + c])
    )
    token.principal = ServicePrincipal.from_db(
        "default", list(_PRINCIPAL_FIELDS), list(row[a + b + c :])
    )
    return token


def json_list(value: Any) -> list[str]:
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
