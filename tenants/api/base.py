"""The base every API view builds on: strict input, per-method permissions, and the
caller's access computed once in `initial()`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from audit.actors import Actor
from audit.denials import record_denial
from tenants.access import NO_ACCESS, Access, access_for
from tenants.actors import actor_of
from tenants.exceptions import TenantNotFound
from tenants.models import ServicePrincipal, Tenant


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses a body that is not a JSON object or that names fields it does not know."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError(
                {"non_field_errors": ["Expected a JSON object."]}, code="invalid"
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: ["Unknown field."] for name in unknown}, code="unknown_field"
            )
        return super().to_internal_value(data)


class SecurityAdmin(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(view.access.is_security_admin)


class GlobalSecurityAdmin(permissions.BasePermission):
    """A security admin over every tenant: only they manage tenant-independent objects."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(view.access.is_global_security_admin)


class StaffReader(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(view.access.is_staff_reader)


class PrincipalSecret(permissions.BasePermission):
    """Authenticated with a `kwp_` principal secret (not a scoped token, not an admin)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ServicePrincipal)


class ScopedTokenCredential(permissions.BasePermission):
    """Authenticated with a `kwt_` scoped token."""

    def has_permission(self, request: Request, view: Any) -> bool:
        from kms.models import ScopedToken

        return isinstance(request.auth, ScopedToken)


class KeywardView(APIView):
    """Per-method permission lists; `access` and `actor` set before any handler runs."""

    permissions_by_method: Mapping[str, tuple[type[permissions.BasePermission], ...]] = {}
    access: Access = NO_ACCESS
    actor: Actor = Actor.anonymous()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.perform_authentication(request)
        self.access = access_for(request.user)
        self.actor = actor_of(request)
        super().initial(request, *args, **kwargs)
        if isinstance(request.user, ServicePrincipal):
            from kms.ratelimit import check_rate

            check_rate(str(request.user.id))

    def get_permissions(self) -> list[permissions.BasePermission]:
        classes = self.permissions_by_method.get(self.request.method or "", ())
        return [permissions.IsAuthenticated(), *(cls() for cls in classes)]

    def visible_tenant(self, slug: str) -> Tenant:
        """The tenant named by `slug` if this caller covers it; 404 alike for absent and
        hidden, so that existence does not leak across tenants."""
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise TenantNotFound()
        if not self.access.covers(tenant):
            record_denial(self.request, 404, tenant.slug)
            raise TenantNotFound()
        return tenant
