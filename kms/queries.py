"""Reads of keys and tokens. The token look-up runs on every token-authenticated request,
so it loads the token, its tenant, key and principal with one plain query."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from audit.recorder import PROBE_WITH
from core import asql, sql
from core.errors import InvalidInput
from kms.keychoice import in_region, source_of
from kms.models import (
    BEFORE_SWITCH,
    KeyKind,
    KeyStatus,
    KeyVersion,
    ProviderKey,
    ScopedToken,
    Stage,
    TenantMove,
    ValidationResult,
)
from tenants import credentials
from tenants.models import KeyPolicy, ServicePrincipal, Tenant, TenantStatus


def keys() -> QuerySet[ProviderKey]:
    """Keys with their tenant, for scoping and display."""
    return ProviderKey.objects.select_related("tenant")


def keys_with_versions() -> QuerySet[ProviderKey]:
    return keys().prefetch_related("versions")


def admin_credential_of(tenant: Tenant, admin_id: UUID | None) -> ProviderKey | None:
    """The key a request names as an admin credential, among the tenant's keys (whether
    it may rotate a given key is the action's to decide)."""
    if admin_id is None:
        return None
    found = keys().filter(pk=admin_id, tenant=tenant).first()
    if found is None:
        raise InvalidInput(
            fields={"admin_credential": ["No such admin credential in this tenant."]}
        )
    return found


def admin_credentials_for(key: ProviderKey) -> QuerySet[ProviderKey]:
    """The live admin credentials of the key's tenant and provider: those that may rotate it."""
    return (
        ProviderKey.objects.filter(
            tenant_id=key.tenant_id, provider=key.provider, kind=KeyKind.ADMIN
        )
        .exclude(status=KeyStatus.REVOKED)
        .order_by("label")
    )


def tenant_moving(tenant_id: Any) -> bool:
    """Whether the tenant's keys are being copied to another store (not yet switched)."""
    return TenantMove.objects.filter(tenant_id=tenant_id, state__in=BEFORE_SWITCH).exists()


def recent_validations(key: ProviderKey, limit: int = 50) -> QuerySet[ValidationResult]:
    """A key's latest validation results, newest first."""
    return key.validations.all()[:limit]


def key_counts_by_status(among: QuerySet[ProviderKey] | None = None) -> dict[str, int]:
    """How many keys (of `among`, or all) have each status."""
    rows = (ProviderKey.objects.all() if among is None else among).order_by()
    counted = rows.values_list("status").annotate(n=Count("id"))
    return {str(status): int(n) for status, n in counted}


def rotation_due(
    among: QuerySet[ProviderKey], now: datetime | None = None
) -> QuerySet[ProviderKey]:
    """Active keys of `among` whose rotation date has passed, most overdue first."""
    moment = now or timezone.now()
    return among.filter(status=KeyStatus.ACTIVE, rotation_due_at__lte=moment).order_by(
        "rotation_due_at"
    )


def live_token_count() -> int:
    return (
        ScopedToken.objects.filter(revoked_at=None, expires_at__gt=timezone.now())
        .filter(_not_cut_off("tenant__tokens_revoked_before"))
        .filter(_not_cut_off("principal__secret_rotated_at"))
        .count()
    )


def tokens() -> QuerySet[ScopedToken]:
    """Tokens with their tenant and key, for scoping and display."""
    return ScopedToken.objects.select_related("tenant", "provider_key")


def live_tokens(key: ProviderKey) -> QuerySet[ScopedToken]:
    """A key's tokens that are neither expired nor revoked, soonest to expire first."""
    return (
        key.tokens.select_related("tenant")
        .filter(revoked_at=None, expires_at__gt=timezone.now())
        .filter(_not_cut_off("tenant__tokens_revoked_before"))
        .filter(_not_cut_off("principal__secret_rotated_at"))
        .order_by("expires_at")
    )


def _not_cut_off(cutoff: str) -> Q:
    """Tokens issued after `cutoff` (a path to a nullable time), or with no cutoff."""
    return Q(**{f"{cutoff}__isnull": True}) | Q(created_at__gte=F(cutoff))


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
    tenant, principal = token.tenant, token.principal
    if tenant.status != TenantStatus.ACTIVE or _before(token, tenant.tokens_revoked_before):
        return "tenant_suspended"
    if _before(token, tenant.key_policy_changed_at):
        return "key_policy_changed"
    if _before(token, principal.secret_rotated_at):
        return "principal_secret_rotated"
    key = token.provider_key
    if key.status != KeyStatus.ACTIVE:
        return "key_not_active"
    if key.tenant_id != tenant.id:
        # A platform key serves the tenant only while its policy and residency allow it.
        if tenant.key_policy == KeyPolicy.BYOK_REQUIRED:
            return "key_policy"
        if not in_region(tenant, key):
            return "residency"
    pinned = token.key_version
    if pinned is not None and pinned != key.current_version and not in_grace(key, pinned, now):
        return "key_version_retired"
    return None


def _before(token: ScopedToken, cutoff: datetime | None) -> bool:
    """Issued before `cutoff` (a suspension of its tenant, a new secret of its principal)."""
    return cutoff is not None and token.created_at < cutoff


def in_grace(key: ProviderKey, version: int, now: datetime) -> bool:
    """`version` is a previous version of `key` whose grace period has not ended."""
    return KeyVersion.objects.filter(
        key=key, version=version, stage=Stage.PREVIOUS, retire_after__gt=now
    ).exists()


_TOKEN = sql.Columns(list(ScopedToken._meta.concrete_fields))
_TOKEN_TENANT = sql.Columns.of(
    Tenant,
    [
        "id",
        "slug",
        "status",
        "tokens_revoked_before",
        "key_policy_changed_at",
        "key_policy",
        "store",
    ],
)
_TOKEN_KEY = sql.Columns.of(
    ProviderKey,
    [
        "id",
        "tenant",
        "provider",
        "label",
        "status",
        "current_version",
        "base_url",
        "store",
        "store_path",
    ],
)
_TOKEN_PRINCIPAL = sql.Columns.of(ServicePrincipal, ["id", "name", "key_id", "secret_rotated_at"])
_LOAD_TOKEN = (
    "SELECT "
    + ", ".join(
        _TOKEN.names("t")
        + _TOKEN_TENANT.names("n")
        + _TOKEN_KEY.names("k")
        + _TOKEN_PRINCIPAL.names("p")
    )
    + " FROM kms_scopedtoken t JOIN tenants_tenant n ON n.id = t.tenant_id"
    " JOIN kms_providerkey k ON k.id = t.provider_key_id"
    " JOIN tenants_serviceprincipal p ON p.id = t.principal_id WHERE t.key_id = %s"
)
_TOKEN_ROW = _TOKEN + _TOKEN_TENANT + _TOKEN_KEY + _TOKEN_PRINCIPAL


def load_token(key_id: str) -> credentials.Stored[ScopedToken] | None:
    """A token with its tenant, key and principal in one plain query. This runs on every
    token-authenticated request; the row is built only once its digest matched, and the
    fields not loaded here stay deferred (read on access), so nothing sees a default in
    place of a stored value."""
    return credentials.stored(_TOKEN_ROW, _LOAD_TOKEN, key_id, _token_of)


async def aload_token_probed(key_id: str) -> credentials.Stored[ScopedToken] | None:
    """`load_token` on the event loop (`core.asql`), in the same statement as the audit
    log's probe (`recorder.PROBE_WITH`): DatabaseUnavailable when either fails. For calls
    whose event is written when they end, so that none starts while the log is down."""
    rows = await asql.fetch_raw(_PROBED_LOAD_TOKEN, [key_id])
    return credentials.stored_of(rows, _TOKEN_ROW, _token_of)


_PROBED_LOAD_TOKEN = f"{PROBE_WITH} {_LOAD_TOKEN}"


def _token_of(values: list[Any]) -> ScopedToken:
    a = len(_TOKEN)
    b = a + len(_TOKEN_TENANT)
    c = b + len(_TOKEN_KEY)
    token = sql.instance(ScopedToken, _TOKEN, values[:a])
    token.tenant = sql.instance(Tenant, _TOKEN_TENANT, values[a:b])
    token.provider_key = sql.instance(ProviderKey, _TOKEN_KEY, values[b:c])
    token.principal = sql.instance(ServicePrincipal, _TOKEN_PRINCIPAL, values[c:])
    return token


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
        "credential_source": source_of(token.tenant, token.provider_key).value,
        "uses": token.uses,
        "max_uses": token.max_uses,
    }
