"""The console's OpenID Connect backend: an ID token is accepted from the configured issuer,
for this client, signed with a key the provider publishes (RS256); its claims, with the
user info's, give the user its role and tenants at every sign-in (`do_sync_sso_user`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from tenants.actions import do_sync_sso_user
from tenants.sso import SsoRefused, identity_for, username_for


class SsoBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    """mozilla-django-oidc's code flow, with the issuer and audience checked and the user
    made from the claims by Keyward's own action; never a password sign-in."""

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> AbstractBaseUser | None:
        if settings.OIDC_POLICY is None or "nonce" not in kwargs:
            return None  # only the callback's authentication is this backend's
        user: AbstractBaseUser | None = super().authenticate(request, **kwargs)
        return user

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = super().verify_token(token, **kwargs)
        audience = payload.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience or []
        if payload.get("iss") != settings.OIDC_ISSUER:
            raise SuspiciousOperation("The ID token comes from another issuer.")
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("The ID token is for another client.")
        return payload

    def get_or_create_user(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> AbstractBaseUser:
        info = self.get_userinfo(access_token, id_token, payload)
        if not isinstance(info, dict) or info.get("sub") != payload.get("sub"):
            raise SsoRefused("subject_mismatch", "The identity provider's answers disagree.")
        claims = {**payload, **info}
        policy = settings.OIDC_POLICY
        if policy is None:  # turned off since this sign-in started
            raise SsoRefused("off", "Single sign-on is off.")
        username = username_for(policy, claims)
        try:
            identity = identity_for(policy, claims)
            return do_sync_sso_user(identity, via="oidc")
        except SsoRefused as refused:
            refused.username = username
            raise
