"""Reads of tenants, principals and grants, for the API to scope and display."""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.models import Grant, ServicePrincipal, Tenant


def tenants() -> QuerySet[Tenant]:
    return Tenant.objects.all()


def principals() -> QuerySet[ServicePrincipal]:
    return ServicePrincipal.objects.all()


def grants() -> QuerySet[Grant]:
    """Grants with their tenant (None for a grant over every tenant)."""
    return Grant.objects.select_related("tenant")
