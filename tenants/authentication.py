"""Bearer authentication for admin tokens (`kwa_`) and principal secrets (`kwp_`).

Every failure, whatever its cause, raises the same AuthenticationFailed; the cause is kept
on the request for the audit event only.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from tenants import credentials
from tenants.models import AdminToken, ServicePrincipal


class BearerAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            self._fail(request, "malformed")
        parsed = credentials.parse(presented.strip())
        if parsed is None:
            self._fail(request, "malformed")
        assert parsed is not None
        try:
            return self._identify(request, parsed)
        except credentials.Rejected as rejected:
            self._fail(request, rejected.reason, parsed)
        raise AssertionError("unreachable")

    def _identify(self, request: Request, parsed: credentials.Parsed) -> tuple[Any, Any]:
        if parsed.prefix == credentials.ADMIN_PREFIX:
            token = credentials.verify(AdminToken, parsed)
            if token.expires_at is not None and token.expires_at <= timezone.now():
                raise credentials.Rejected("expired")
            if not token.user.is_active:
                raise credentials.Rejected("user_inactive")
            return token.user, token
        if parsed.prefix == credentials.PRINCIPAL_PREFIX:
            principal = credentials.verify(ServicePrincipal, parsed)
            return principal, principal
        if parsed.prefix == credentials.TOKEN_PREFIX:
            from kms.models import ScopedToken
            from kms.tokens import load_token

            scoped = credentials.verify(ScopedToken, parsed, lookup=load_token)
            return scoped.principal, scoped
        raise credentials.Rejected("unsupported_credential")

    def _fail(
        self, request: Request, reason: str, parsed: credentials.Parsed | None = None
    ) -> None:
        failure = {"reason": reason}
        if parsed is not None:
            failure["credential"] = f"{parsed.prefix}{parsed.key_id}"
        request._request.keyward_auth_failure = failure  # type: ignore[attr-defined]
        raise exceptions.AuthenticationFailed()

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="keyward"'
