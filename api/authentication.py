"""Bearer authentication for admin tokens (`kwa_`), principal secrets (`kwp_`) and scoped
tokens (`kwt_`).

Every failure, whatever its cause, gets the same 401; the cause is kept on the request for
the audit event only. `identify` serves DRF's authentication class and the plain views of
the hot path alike.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from audit.actors import Actor
from core.context import note_actor
from kms.models import ScopedToken
from kms.queries import load_token
from tenants import credentials
from tenants.actors import actor_for
from tenants.models import AdminToken, ServicePrincipal


class AuthenticationFailed(Exception):
    """The one refusal for a presented credential that does not authenticate."""


def identify(request: HttpRequest) -> tuple[Any, Any] | None:
    """(user, credential row) for the request's bearer credential; None when it presents
    none; AuthenticationFailed, with the cause noted on the request, when it does not hold."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    scheme, _, presented = header.partition(" ")
    parsed = credentials.parse(presented.strip()) if scheme.lower() == "bearer" else None
    if parsed is None:
        raise _fail(request, "malformed")
    try:
        found = _identify(parsed)
    except credentials.Rejected as rejected:
        raise _fail(request, rejected.reason, parsed) from None
    actor = actor_of_credential(*found)
    note_actor(actor.type, actor.id)  # for the request's log lines
    return found


def _identify(parsed: credentials.Parsed) -> tuple[Any, Any]:
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
    request: HttpRequest, reason: str, parsed: credentials.Parsed | None = None
) -> AuthenticationFailed:
    """The one refusal for every cause; the cause is kept for the audit event only."""
    failure = {"reason": reason}
    if parsed is not None:
        failure["credential"] = f"{parsed.prefix}{parsed.key_id}"
    request.keyward_auth_failure = failure  # type: ignore[attr-defined]
    return AuthenticationFailed()


def actor_of_credential(user: Any, credential: Any) -> Actor:
    """Who the audit log names: the token for a scoped token, else the principal or user
    behind the credential (anonymous when there is none)."""
    if isinstance(credential, ScopedToken):
        return Actor("token", str(credential.id))
    return actor_for(user)


class BearerAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        try:
            return identify(request._request)
        except AuthenticationFailed:
            raise exceptions.AuthenticationFailed() from None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="keyward"'
