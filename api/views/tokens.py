"""Scoped tokens (principal-authenticated), introspection, revocation and exchange."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from api.base import (
    KeywardView,
    PrincipalSecret,
    ScopedTokenCredential,
    SecurityAdmin,
    StaffReader,
    StrictSerializer,
)
from core.errors import NotFound
from kms import queries
from kms.actions import tokens
from kms.exceptions import KeyNotFound
from kms.models import ScopedToken
from kms.providers import ADAPTERS
from tenants.models import Scope, ServicePrincipal

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenNotFound(NotFound):
    code = "token_not_found"
    message = "No such token."


class TokenRequestSerializer(StrictSerializer):
    tenant = serializers.CharField(max_length=63)
    provider = serializers.ChoiceField(
        choices=sorted(ADAPTERS), error_messages={"invalid_choice": "Unknown provider."}
    )
    key = serializers.CharField(max_length=100, required=False, allow_blank=False)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), min_length=1, max_length=2
    )
    ttl_seconds = serializers.IntegerField(min_value=10, required=False)
    max_uses = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    key_version = serializers.IntegerField(
        min_value=1,
        max_value=2**31 - 1,
        required=False,
        help_text="Pin a version (current, or previous within its grace); by default an "
        "exchange releases whatever version is current at that moment.",
    )


class TokenBodySerializer(StrictSerializer):
    token = serializers.CharField(max_length=200, trim_whitespace=False, write_only=True)


class EmptySerializer(StrictSerializer):
    pass


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


class TokenIssueView(KeywardView):
    """A service principal trades its secret for a short-lived token (shown once)."""

    permissions_by_method = {"POST": (PrincipalSecret,)}

    @extend_schema(request=TokenRequestSerializer, responses={201: dict})
    def post(self, request: Request) -> Response:
        body = TokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token, plaintext = tokens.do_issue_token(
            self.principal, tokens.TokenRequest(**body.validated_data), actor=self.actor
        )
        ttl = int((token.expires_at - token.created_at).total_seconds())
        data = {
            "token": plaintext,
            "token_type": "Bearer",
            "expires_at": token.expires_at,
            "expires_in": ttl,
            "scopes": token.scopes,
            "tenant": token.tenant.slug,
            "provider": token.provider_key.provider,
            "key_id": str(token.provider_key_id),
            "key_version": token.key_version,
            "token_id": str(token.id),
            "max_uses": token.max_uses,
        }
        return Response(data, status=status.HTTP_201_CREATED, headers=NO_STORE)


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


class IntrospectView(TokenCallerView):
    """RFC 7662: `active` and details for a token the caller may see; only
    `{"active": false}` for anything else."""

    @extend_schema(request=TokenBodySerializer, responses=dict)
    def post(self, request: Request) -> Response:
        body = TokenBodySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token = queries.find_token(body.validated_data["token"])
        return Response(
            queries.introspect(token, may_see=self.may_see(request, token)), headers=NO_STORE
        )


class RevokeView(TokenCallerView):
    """RFC 7009: revoke a token; 200 whatever the token was, so nothing is revealed."""

    @extend_schema(request=TokenBodySerializer, responses=dict)
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

    @extend_schema(request=None, responses=dict)
    def post(self, request: Request, token_id: str) -> Response:
        token = self.visible(queries.tokens(), TokenNotFound, pk=token_id)
        revoked = tokens.do_revoke_token(token, actor=self.actor)
        return Response({"token_id": str(token.id), "revoked": True, "changed": revoked})


class KeyTokensView(KeywardView):
    """Metadata of a key's live tokens: who holds what, until when. Never the tokens."""

    permissions_by_method = {"GET": (StaffReader,)}

    @extend_schema(responses=TokenMetadataSerializer(many=True))
    def get(self, request: Request, slug: str, key_id: str) -> Response:
        key = self.visible(queries.keys(), KeyNotFound, pk=key_id)
        live = queries.live_tokens(key)
        return Response({"results": TokenMetadataSerializer(live, many=True).data})


class ExchangeView(KeywardView):
    """Trade a `release` token for the provider key it is bound to (no-store)."""

    permissions_by_method = {"POST": (ScopedTokenCredential,)}

    @extend_schema(request=None, responses=dict)
    def post(self, request: Request) -> Response:
        if request._request.body:  # an empty body needs no content type
            EmptySerializer(data=request.data).is_valid(raise_exception=True)
        released: dict[str, Any] = tokens.do_exchange(self.scoped_token, actor=self.actor)
        return Response(released, headers=NO_STORE)
