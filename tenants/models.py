"""Tenants, the humans who administer them and the services that call Keyward.

Credentials (admin tokens, principal secrets) are stored as a lookup id plus a keyed hash
and the id of the pepper that keyed it; the secret itself is shown once and never stored.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from tenants.validators import validate_principal_name, validate_slug


class TenantStatus(models.TextChoices):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class KeyPolicy(models.TextChoices):
    """Whose key a tenant's tokens use: only its own, its own first, or the platform's."""

    BYOK_REQUIRED = "byok_required"
    BYOK_PREFERRED = "byok_preferred"
    PLATFORM_ONLY = "platform_only"


class Tenant(models.Model):
    """A customer organisation whose provider keys Keyward holds."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.CharField(max_length=63, unique=True, validators=[validate_slug])
    name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=16, choices=TenantStatus.choices, default=TenantStatus.ACTIVE
    )
    # A suspension revokes every token issued before it, so reactivating revives none.
    tokens_revoked_before = models.DateTimeField(null=True, blank=True)
    # The deployment's own keys live under the one platform tenant, used on behalf of
    # tenants whose key policy allows it; it is never a token's tenant.
    is_platform = models.BooleanField(default=False)
    key_policy = models.CharField(
        max_length=16, choices=KeyPolicy.choices, default=KeyPolicy.BYOK_REQUIRED
    )
    # Under byok_preferred, whether a tenant key that is invalid or revoked gives way to the
    # platform key (otherwise such a tenant is refused, never switched silently).
    platform_fallback = models.BooleanField(default=False)
    # A policy change ends the tokens issued before it, so none outlives the policy that
    # chose its key.
    key_policy_changed_at = models.DateTimeField(null=True, blank=True)
    # The named secret store the tenant is pinned to ("": unpinned, the default store).
    store = models.CharField(max_length=63, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("slug",)
        constraints = [
            models.UniqueConstraint(
                fields=["is_platform"],
                condition=models.Q(is_platform=True),
                name="one_platform_tenant",
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == TenantStatus.ACTIVE


class HashedCredential(models.Model):
    """Lookup id + HMAC digest + pepper id of a credential (NetBox v2 tokens' layout)."""

    key_id = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    pepper_id = models.PositiveSmallIntegerField()
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class Role(models.TextChoices):
    SECURITY_ADMIN = "security_admin"
    AUDITOR = "auditor"


class StaffRole(models.Model):
    """A human's role, for every tenant or for an explicit set of them."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_role"
    )
    role = models.CharField(max_length=32, choices=Role.choices)
    # Explicit, so that an empty set after a tenant is removed never widens access.
    all_tenants = models.BooleanField(default=False)
    tenants = models.ManyToManyField(Tenant, blank=True, related_name="staff_roles")

    def __str__(self) -> str:
        return f"{self.user} {self.role}"


class AdminToken(HashedCredential):
    """A `kwa_` API token of a human user."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="admin_tokens"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"kwa_{self.key_id}..."


class ServicePrincipal(HashedCredential):
    """An internal service identity; authenticates with a `kwp_` secret."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=63, unique=True, validators=[validate_principal_name])
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @property
    def is_authenticated(self) -> bool:
        return True


class Scope(models.TextChoices):
    RELEASE = "release"
    PROXY = "proxy"


class Grant(models.Model):
    """What a principal may ask tokens for: a tenant (or all), a provider (or all), scopes,
    and the longest TTL. No grant, no token."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    principal = models.ForeignKey(ServicePrincipal, on_delete=models.CASCADE, related_name="grants")
    # None means every tenant ("*"); only security admins over every tenant may grant that.
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, null=True, blank=True, related_name="grants"
    )
    provider = models.CharField(max_length=32)  # a provider name, or "*"
    scopes = models.JSONField(default=list)
    max_ttl_seconds = models.PositiveIntegerField()
    # The models its tokens may name in a proxied call; empty: any.
    allowed_models = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ("created_at", "id")

    def __str__(self) -> str:
        tenant = self.tenant.slug if self.tenant else "*"
        return f"{self.principal} {tenant}/{self.provider} {','.join(self.scopes)}"

    def covers(self, tenant: Tenant, provider: str, scopes: list[str]) -> bool:
        return (
            (self.tenant_id is None or self.tenant_id == tenant.id)
            and self.provider in ("*", provider)
            and set(scopes) <= set(self.scopes)
        )
