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

from kms.models import ScopedToken
from kms.queries import load_token
from tenants import credentials
from tenants.models import AdminToken, ServicePrincipal


class BearerAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, presented = header.partition(" ")
        parsed = credentials.parse(presented.strip()) if scheme.lower() == "bearer" else None
        if parsed is None:
            raise self._fail(request, "malformed")
        try:
            return self._identify(request, parsed)
        except credentials.Rejected as rejected:
            raise self._fail(request, rejected.reason, parsed) from None

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
            scoped = credentials.verify(ScopedToken, parsed, lookup=load_token)
            return scoped.principal, scoped
        raise credentials.Rejected("unsupported_credential")

    def _fail(
        self, request: Request, reason: str, parsed: credentials.Parsed | None = None
    ) -> exceptions.AuthenticationFailed:
        """The one refusal for every cause; the cause is kept for the audit event only."""
        failure = {"reason": reason}
        if parsed is not None:
            failure["credential"] = f"{parsed.prefix}{parsed.key_id}"
        request._request.keyward_auth_failure = failure  # type: ignore[attr-defined]
        return exceptions.AuthenticationFailed()

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="keyward"'
