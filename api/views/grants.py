"""Grants: which principal may ask tokens for which tenant, provider and scopes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from api.base import GlobalSecurityAdmin, KeywardView, SecurityAdmin, StaffReader, StrictSerializer
from api.schema import listing
from core.errors import NotFound
from kms.providers import GRANT_PROVIDERS
from tenants import queries
from tenants.actions import do_create_grant, do_delete_grant
from tenants.exceptions import PrincipalNotFound, TenantNotFound
from tenants.models import Grant, Scope
from tenants.validators import (
    GRANT_TTL_MIN,
    GRANT_TTL_TOO_LONG,
    MODEL_NAME_MAX,
    MODELS_PER_GRANT,
    grant_tenant_validator,
    grant_ttl_max,
    model_name_validator,
)


class GrantNotFound(NotFound):
    code = "grant_not_found"
    message = "No such grant."


class GrantCreateSerializer(StrictSerializer):
    principal = serializers.UUIDField()
    tenant = serializers.CharField(
        max_length=63, trim_whitespace=False, validators=[grant_tenant_validator]
    )
    provider = serializers.ChoiceField(
        choices=GRANT_PROVIDERS, error_messages={"invalid_choice": "Unknown provider."}
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), min_length=1, max_length=2
    )

    models = serializers.ListField(
        child=serializers.CharField(max_length=MODEL_NAME_MAX, validators=[model_name_validator]),
        max_length=MODELS_PER_GRANT,
        required=False,
        help_text="The models its tokens may name in proxied calls; empty or left out: any.",
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        # Bounded by the configuration of now, which the OpenAPI document states too.
        fields["max_ttl_seconds"] = serializers.IntegerField(
            min_value=GRANT_TTL_MIN,
            max_value=grant_ttl_max(),
            error_messages={"max_value": GRANT_TTL_TOO_LONG},
        )
        return fields


class GrantSerializer(serializers.ModelSerializer[Grant]):
    tenant = serializers.SerializerMethodField()
    models = serializers.ListField(child=serializers.CharField(), source="allowed_models")

    class Meta:
        model = Grant
        fields = (
            "id",
            "principal",
            "tenant",
            "provider",
            "scopes",
            "max_ttl_seconds",
            "models",
            "created_at",
            "created_by",
        )
        read_only_fields = fields

    def get_tenant(self, grant: Grant) -> str:
        return grant.tenant.slug if grant.tenant else "*"


class GrantListView(KeywardView):
    """List the grants of the tenants the caller covers; create one."""

    permissions_by_method = {"GET": (StaffReader,), "POST": (SecurityAdmin,)}

    @extend_schema(operation_id="grants_list", responses=listing(GrantSerializer, paginated=False))
    def get(self, request: Request) -> Response:
        grants = self.restrict(queries.grants())
        return Response({"results": GrantSerializer(grants, many=True).data})

    @extend_schema(request=GrantCreateSerializer, responses={201: GrantSerializer})
    def post(self, request: Request) -> Response:
        body = GrantCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        principal = self.visible(queries.principals(), PrincipalNotFound, pk=data["principal"])
        if data["tenant"] == "*":
            if not GlobalSecurityAdmin().has_permission(request, self):
                self.permission_denied(request)
            tenant = None
        else:
            tenant = self.visible(queries.tenants(), TenantNotFound, slug=data["tenant"])
        grant = do_create_grant(
            principal,
            tenant,
            data["provider"],
            data["scopes"],
            data["max_ttl_seconds"],
            actor=self.actor,
            models=data.get("models"),
        )
        return Response(GrantSerializer(grant).data, status=status.HTTP_201_CREATED)


class GrantDetailView(KeywardView):
    """Delete a grant; every token issued under it stops working at once."""

    permissions_by_method = {"GET": (StaffReader,), "DELETE": (SecurityAdmin,)}

    def grant(self, grant_id: UUID) -> Grant:
        return self.visible(queries.grants(), GrantNotFound, pk=grant_id)

    @extend_schema(responses=GrantSerializer)
    def get(self, request: Request, grant_id: UUID) -> Response:
        return Response(GrantSerializer(self.grant(grant_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, grant_id: UUID) -> Response:
        do_delete_grant(self.grant(grant_id), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
