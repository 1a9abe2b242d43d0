"""What a caller may see and do: roles, and the tenants they cover.

Computed once per request and applied by the API base view, so every queryset is scoped
the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from tenants.models import Role, StaffRole, Tenant

SUPERUSER = "superuser"


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

    def tenants(self) -> QuerySet[Tenant]:
        if self.role is None:
            return Tenant.objects.none()
        if self.all_tenants:
            return Tenant.objects.all()
        return Tenant.objects.filter(id__in=self.tenant_ids)


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
    ids = (
        frozenset() if staff.all_tenants else frozenset(staff.tenants.values_list("id", flat=True))
    )
    return Access(role=staff.role, all_tenants=staff.all_tenants, tenant_ids=ids)
