"""The base every API view builds on: strict input, per-method permissions, the caller's
access computed once in `initial()`, and tenant scoping in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from rest_framework import exceptions, permissions, serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from api.authentication import actor_of_credential
from api.errors import audit_refusal
from audit.actors import Actor
from core.errors import NotFound
from kms.models import ProviderKey, ScopedToken, TenantMove
from kms.ratelimit import check_rate
from tenants.access import NO_ACCESS, Access, access_for
from tenants.exceptions import TenantNotFound
from tenants.models import Grant, ServicePrincipal, Tenant

M = TypeVar("M", bound=Model)


# Kinds of object that belong to no tenant: visible to whoever passes the permissions.
UNSCOPED: tuple[type[Model], ...] = (ServicePrincipal,)
# Kinds of object that belong to one tenant (None for a grant over every tenant).
SCOPED: tuple[type[Model], ...] = (Tenant, ProviderKey, ScopedToken, Grant, TenantMove)


def _owner(found: Model) -> tuple[bool, Tenant | None]:
    """Whether this kind of object belongs to tenants, and the tenant it belongs to."""
    if isinstance(found, UNSCOPED):
        return False, None
    if isinstance(found, Tenant):
        return True, found
    if not isinstance(found, SCOPED):  # a new kind must be placed in one of the two lists
        raise TypeError(f"no tenant scoping declared for {type(found).__name__}")
    tenant: Tenant | None = getattr(found, "tenant")  # noqa: B009 - typed per model
    return True, tenant


def _wrong_json_type(field: serializers.Field[Any, Any, Any, Any], value: Any) -> str:
    """What is wrong with a value's JSON type for `field`, or "": DRF coerces "60" and 1.0
    to integers and 0 to a string; the schema promises exact types, so the API keeps them.
    `null` is left to the field's own `allow_null`."""
    if value is None:
        return ""
    if isinstance(field, serializers.BooleanField):
        return "" if isinstance(value, bool) else "Must be true or false."
    if isinstance(field, serializers.IntegerField):
        exact = isinstance(value, int) and not isinstance(value, bool)
        return "" if exact else "Must be a JSON integer."
    if isinstance(field, serializers.CharField | serializers.ChoiceField):
        return "" if isinstance(value, str) else "Must be a JSON string."
    return ""


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
        wrong = {
            name: [message]
            for name, value in data.items()
            if (message := _wrong_json_type(self.fields[name], value))
        }
        if wrong:
            raise serializers.ValidationError(wrong, code="invalid")
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
        return isinstance(request.auth, ScopedToken)


class KeywardView(APIView):
    """Per-method permission lists; `access`, `actor` and, for URLs under
    /tenants/{slug}, the visible `tenant` are set before any handler runs. Every object a
    handler names by id goes through `visible()`, the one place where scoping happens."""

    permissions_by_method: Mapping[str, tuple[type[permissions.BasePermission], ...]] = {}
    access: Access = NO_ACCESS
    actor: Actor = Actor.anonymous()
    scope: Tenant | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # A method no handler serves is 405 for everyone, before the caller is looked at,
        # as on the plain views.
        if request.method != "OPTIONS" and not self._handles(request.method):
            raise exceptions.MethodNotAllowed(request.method or "")
        self.perform_authentication(request)
        self.access = access_for(request.user)
        self.actor = actor_of_credential(request.user, request.auth)
        super().initial(request, *args, **kwargs)
        if isinstance(request.user, ServicePrincipal):
            check_rate(str(request.user.id))
        if "slug" in kwargs and self._handles(request.method):
            self.scope = self.visible(Tenant.objects.all(), TenantNotFound, slug=kwargs["slug"])

    def _handles(self, method: str | None) -> bool:
        """A method this view serves (not OPTIONS, not one that gets 405)."""
        name = (method or "").lower()
        return name != "options" and name in self.http_method_names and hasattr(self, name)

    @property
    def tenant(self) -> Tenant:
        """The visible tenant of a /tenants/{slug} URL."""
        if self.scope is None:  # a view outside /tenants/{slug} has no tenant to offer
            raise TenantNotFound()
        return self.scope

    @property
    def principal(self) -> ServicePrincipal:
        """The service principal whose `kwp_` secret authenticated this request."""
        if not isinstance(self.request.auth, ServicePrincipal):
            raise exceptions.NotAuthenticated()
        return self.request.auth

    @property
    def scoped_token(self) -> ScopedToken:
        """The `kwt_` token that authenticated this request."""
        if not isinstance(self.request.auth, ScopedToken):
            raise exceptions.NotAuthenticated()
        return self.request.auth

    def get_permissions(self) -> list[permissions.BasePermission]:
        classes = self.permissions_by_method.get(self.request.method or "", ())
        return [permissions.IsAuthenticated(), *(cls() for cls in classes)]

    def visible(self, queryset: QuerySet[M], not_found: type[NotFound], **lookup: Any) -> M:
        """The object `lookup` names, if this caller covers its tenant (and, under a
        /tenants/{slug} URL, it belongs to that tenant). Absent and hidden get the same
        404, so existence does not leak; a hidden one is audited in its tenant's chain."""
        try:
            found = queryset.filter(**lookup).first()
        except (ValueError, ValidationError):  # a malformed id names nothing
            found = None
        if found is None:
            raise not_found()
        scoped, owner = _owner(found)
        if not scoped:
            return found  # an object of no tenant (a principal): the permissions decide
        if not self.access.covers_scope(owner):
            audit_refusal(self.request, 404, actor=self.actor, tenant=owner.slug if owner else None)
            hidden = not_found()
            hidden.audited = True
            raise hidden
        if self.scope is not None and owner is not None and owner.pk != self.scope.pk:
            raise not_found()
        return found

    def restrict(self, queryset: QuerySet[M], path: str = "tenant") -> QuerySet[M]:
        """Only the rows of the tenants this caller covers (`path` leads to the tenant)."""
        return self.access.restrict(queryset, path)
