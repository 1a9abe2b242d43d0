"""What a caller may see and do: roles, and the tenants they cover.

Computed once per request and applied by the API base view, so every queryset is scoped
the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db.models import Model, QuerySet

from tenants.models import Role, StaffRole, Tenant

SUPERUSER = "superuser"
M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class Access:
    role: str | None
    all_tenants: bool = False
    tenant_ids: frozenset[uuid.UUID] = frozenset()

    @property
    def is_security_admin(self) -> bool:
        return self.role in (SUPERUSER, Role.SECURITY_ADMIN)

    @property
    def is_global_security_admin(self) -> bool:
        return self.is_security_admin and self.all_tenants

    @property
    def is_staff_reader(self) -> bool:
        return self.role in (SUPERUSER, Role.SECURITY_ADMIN, Role.AUDITOR)

    def covers(self, tenant: Tenant) -> bool:
        return self.all_tenants or tenant.id in self.tenant_ids

    def covers_scope(self, tenant: Tenant | None) -> bool:
        """Covers an object of `tenant`; an object of no tenant (a grant over every
        tenant) only when this access covers them all."""
        return self.all_tenants if tenant is None else self.covers(tenant)

    def restrict(self, queryset: QuerySet[M], path: str = "tenant") -> QuerySet[M]:
        """Only the rows of covered tenants; `path` leads from a row to its tenant's id."""
        if self.role is None:
            return queryset.none()
        if self.all_tenants:
            return queryset
        return queryset.filter(**{f"{path}__in": self.tenant_ids})

    def slugs(self) -> list[str] | None:
        """The covered tenants' slugs, or None when every tenant is covered."""
        if self.all_tenants:
            return None
        return list(Tenant.objects.filter(id__in=self.tenant_ids).values_list("slug", flat=True))

    def tenants(self) -> QuerySet[Tenant]:
        return self.restrict(Tenant.objects.all(), "pk")


NO_ACCESS = Access(role=None)


def access_for(identity: Any) -> Access:
    """The access of a human user; principals and anonymous callers have no staff role."""
    if identity is None or not getattr(identity, "is_authenticated", False):
        return NO_ACCESS
    if not hasattr(identity, "is_superuser"):
        return NO_ACCESS
    if identity.is_superuser:
        return Access(role=SUPERUSER, all_tenants=True)
    staff = StaffRole.objects.filter(user=identity).first()
    if staff is None:
        return NO_ACCESS
    # The platform tenant's keys serve every tenant: only an admin of all tenants covers it.
    ids = (
        frozenset()
        if staff.all_tenants
        else frozenset(staff.tenants.filter(is_platform=False).values_list("id", flat=True))
    )
    return Access(role=staff.role, all_tenants=staff.all_tenants, tenant_ids=ids)
