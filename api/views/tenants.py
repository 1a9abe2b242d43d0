"""Tenant and service-principal endpoints: translate HTTP to service calls and back."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from api.base import GlobalSecurityAdmin, KeywardView, SecurityAdmin, StaffReader
from api.schema import listing
from api.serializers.tenants import (
    PrincipalCreateSerializer,
    PrincipalSerializer,
    PrincipalWithSecretSerializer,
    TenantCreateSerializer,
    TenantSerializer,
    TenantUpdateSerializer,
)
from kms.actions import residency
from tenants import actions, queries
from tenants.exceptions import PrincipalNotFound

NO_STORE = {"Cache-Control": "no-store"}
POLICY_FIELDS = {"key_policy", "platform_fallback"}
POLICY_ADMINS = "Only security admins over every tenant set a tenant's key policy."


class SlugCursor(CursorPagination):
    ordering = "slug"
    page_size = 100


class NameCursor(CursorPagination):
    ordering = "name"
    page_size = 100


def _paginated(
    view: KeywardView, paginator: CursorPagination, queryset: Any, serializer: Any
) -> Response:
    page: Any = paginator.paginate_queryset(queryset, view.request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


class TenantListView(KeywardView):
    """Tenants: list those the caller covers; create one (global security admins)."""

    permissions_by_method = {"GET": (StaffReader,), "POST": (GlobalSecurityAdmin,)}

    @extend_schema(operation_id="tenants_list", responses=listing(TenantSerializer, paginated=True))
    def get(self, request: Request) -> Response:
        return _paginated(self, SlugCursor(), self.access.tenants(), TenantSerializer)

    @extend_schema(request=TenantCreateSerializer, responses={201: TenantSerializer})
    def post(self, request: Request) -> Response:
        body = TenantCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tenant = actions.do_create_tenant(**body.validated_data, actor=self.actor)
        return Response(TenantSerializer(tenant).data, status=status.HTTP_201_CREATED)


class TenantDetailView(KeywardView):
    """One tenant: read, rename, suspend or reactivate, set its key policy, pin it to a
    secret store."""

    permissions_by_method = {"GET": (StaffReader,), "PATCH": (SecurityAdmin,)}

    @extend_schema(responses=TenantSerializer)
    def get(self, request: Request, slug: str) -> Response:
        return Response(TenantSerializer(self.tenant).data)

    @extend_schema(request=TenantUpdateSerializer, responses=TenantSerializer)
    def patch(self, request: Request, slug: str) -> Response:
        body = TenantUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        if POLICY_FIELDS & set(fields) and not self.access.is_global_security_admin:
            # The policy decides whether the deployment's own keys serve the tenant.
            raise PermissionDenied(POLICY_ADMINS)
        tenant = self.tenant
        # The pin first: it is the change that may be refused, before anything else changed.
        if "store" in fields:
            tenant = residency.do_pin_tenant_store(tenant, fields.pop("store"), actor=self.actor)
        tenant = actions.do_update_tenant(tenant, **fields, actor=self.actor)
        return Response(TenantSerializer(tenant).data)


class PrincipalListView(KeywardView):
    """Service principals: list; create one and receive its secret once."""

    permissions_by_method = {"GET": (SecurityAdmin,), "POST": (GlobalSecurityAdmin,)}

    @extend_schema(
        operation_id="principals_list", responses=listing(PrincipalSerializer, paginated=True)
    )
    def get(self, request: Request) -> Response:
        seen = queries.principals_seen_by(self.access)
        return _paginated(self, NameCursor(), seen, PrincipalSerializer)

    @extend_schema(
        request=PrincipalCreateSerializer, responses={201: PrincipalWithSecretSerializer}
    )
    def post(self, request: Request) -> Response:
        body = PrincipalCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        principal, secret = actions.do_create_principal(
            body.validated_data["name"], actor=self.actor
        )
        data = PrincipalWithSecretSerializer(principal, context={"client_secret": secret}).data
        return Response(data, status=status.HTTP_201_CREATED, headers=NO_STORE)


class PrincipalDetailView(KeywardView):
    """One service principal: read or delete (its secret stops working at once)."""

    permissions_by_method = {"GET": (SecurityAdmin,), "DELETE": (GlobalSecurityAdmin,)}

    @extend_schema(responses=PrincipalSerializer)
    def get(self, request: Request, principal_id: UUID) -> Response:
        seen = queries.principals_seen_by(self.access)
        principal = self.visible(seen, PrincipalNotFound, pk=principal_id)
        return Response(PrincipalSerializer(principal).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, principal_id: UUID) -> Response:
        actions.do_delete_principal(principal_id, actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PrincipalRotateSecretView(KeywardView):
    """Replace a principal's secret; the new one is shown once."""

    permissions_by_method = {"POST": (GlobalSecurityAdmin,)}

    @extend_schema(request=None, responses=PrincipalWithSecretSerializer)
    def post(self, request: Request, principal_id: UUID) -> Response:
        principal, secret = actions.do_rotate_principal_secret(principal_id, actor=self.actor)
        data = PrincipalWithSecretSerializer(principal, context={"client_secret": secret}).data
        return Response(data, headers=NO_STORE)
