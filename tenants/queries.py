"""Reads of tenants, principals and grants, for the API to scope and display."""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.access import Access
from tenants.models import Grant, ServicePrincipal, Tenant


def tenants() -> QuerySet[Tenant]:
    return Tenant.objects.all()


def principals() -> QuerySet[ServicePrincipal]:
    return ServicePrincipal.objects.all()


def principals_seen_by(access: Access) -> QuerySet[ServicePrincipal]:
    """Every principal for an admin over every tenant; for one limited to some tenants, only
    the principals granted on one of them (the names of the others are not theirs to see)."""
    if access.all_tenants:
        return principals()
    if access.role is None:
        return principals().none()
    return principals().filter(grants__tenant__in=access.tenant_ids).distinct()


def grants() -> QuerySet[Grant]:
    """Grants with their tenant (None for a grant over every tenant)."""
    return Grant.objects.select_related("tenant")
