"""Token revocation (RFC 7009) and token metadata for admins; issue, introspection and
exchange are the plain views of `api.views.hot`."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.base import (
    KeywardView,
    SecurityAdmin,
    StaffReader,
    StrictSerializer,
)
from api.schema import listing
from core.errors import NotFound
from kms import queries
from kms.actions import tokens
from kms.exceptions import KeyNotFound
from kms.models import ScopedToken
from tenants.models import ServicePrincipal

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenNotFound(NotFound):
    code = "token_not_found"
    message = "No such token."


class TokenBodySerializer(StrictSerializer):
    token = serializers.CharField(max_length=200, trim_whitespace=False, write_only=True)


class TokenMetadataSerializer(serializers.ModelSerializer[ScopedToken]):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)

    class Meta:
        model = ScopedToken
        fields = (
            "id",
            "principal",
            "tenant",
            "provider_key",
            "key_version",
            "scopes",
            "created_at",
            "expires_at",
            "max_uses",
            "uses",
            "revoked_at",
            "last_used_at",
        )
        read_only_fields = fields


class TokenCallerView(KeywardView):
    """Endpoints a principal uses for its own tokens and a security admin for any token of
    the tenants they cover."""

    permissions_by_method = {"POST": ()}

    def may_see(self, request: Request, token: ScopedToken | None) -> bool:
        if token is None:
            return False
        if isinstance(request.auth, ServicePrincipal):
            return token.principal_id == request.auth.id
        return self.access.is_security_admin and self.access.covers(token.tenant)

    def check_permissions(self, request: Request) -> None:
        super().check_permissions(request)
        if not isinstance(request.auth, ServicePrincipal) and not self.access.is_security_admin:
            self.permission_denied(request)


class RevokeView(TokenCallerView):
    """RFC 7009: revoke a token; 200 whatever the token was, so nothing is revealed."""

    @extend_schema(operation_id="tokens_revoke", request=TokenBodySerializer, responses=dict)
    def post(self, request: Request) -> Response:
        body = TokenBodySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token = queries.find_token(body.validated_data["token"])
        if token is not None and self.may_see(request, token):
            tokens.do_revoke_token(token, actor=self.actor)
        return Response({}, headers=NO_STORE)


class AdminRevokeView(KeywardView):
    """A security admin revokes a token by id."""

    permissions_by_method = {"POST": (SecurityAdmin,)}

    @extend_schema(operation_id="tokens_admin_revoke", request=None, responses=dict)
    def post(self, request: Request, token_id: UUID) -> Response:
        token = self.visible(queries.tokens(), TokenNotFound, pk=token_id)
        revoked = tokens.do_revoke_token(token, actor=self.actor)
        return Response({"token_id": str(token.id), "revoked": True, "changed": revoked})


class KeyTokensView(KeywardView):
    """Metadata of a key's live tokens: who holds what, until when. Never the tokens."""

    permissions_by_method = {"GET": (StaffReader,)}

    @extend_schema(
        operation_id="tenants_keys_tokens_list",
        responses=listing(TokenMetadataSerializer, paginated=False),
    )
    def get(self, request: Request, slug: str, key_id: UUID) -> Response:
        key = self.visible(queries.keys(), KeyNotFound, pk=key_id)
        live = queries.live_tokens(key)
        return Response({"results": TokenMetadataSerializer(live, many=True).data})
